"""Fetch an image by URL for a user, without letting the URL reach into our own network.

Every hop (the first request and each redirect) is parsed, its host resolved once, every resolved
address vetted, and the connection then made to a vetted address only: the hostname is kept for the
``Host`` header, TLS SNI and certificate checks, but DNS is never asked again between the check and
the connect, so a rebinding DNS server cannot swap in ``127.0.0.1``. This holds for http and https.

Proxies from the environment are deliberately not used: a proxy would do its own resolution and
undo the pinning. Name resolution (``getaddrinfo``, which has no timeout) runs on a small pool of
resolver threads and is waited for only until the deadline.

One wall-clock deadline covers the whole fetch: connecting, every redirect hop, the response headers
and the body. Per-read timeouts alone cannot do that (a server sending one header byte a second
never trips them), so a watchdog shuts down the fetch's sockets when the deadline passes, which
wakes whatever read is waiting. :class:`FetchSlots` caps how many fetches run at once.

Example:
    >>> from picmetric_core.config import Settings
    >>> fetched = fetch_url("https://example.com/dog.jpg", Settings())  # doctest: +SKIP
    >>> fetched.final_url, len(fetched.data)  # doctest: +SKIP
    ('https://example.com/dog.jpg', 163759)
"""

from __future__ import annotations

import http
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import certifi
from urllib3 import HTTPConnectionPool, HTTPResponse, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationParseError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import parse_url

from picmetric_core.config import Settings
from picmetric_core.errors import FetchFailed, ImageTooLarge, NotAnImage, PicMetricError, ServerBusy, UrlRefused
from picmetric_core.intake.images import NOT_AN_IMAGE_MESSAGE, format_size, sniff_format, too_many_bytes
from picmetric_core.text_filters import check_url_text

Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> IP addresses``; injectable so tests can play DNS without a network."""

Connector = Callable[[tuple[str, int], float | None], socket.socket]
"""``((ip, port), timeout) -> connected socket``, the signature of :func:`socket.create_connection`."""

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
WEB_PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
USER_AGENT = "PicMetric/0.1 (image analysis; fetches one image per request)"
_CHUNK = 64 * 1024
_SNIFF_BYTES = 16  # what tells a file's kind (images' and videos' sniffers look at no more)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# getaddrinfo cannot be interrupted: lookups run here so a fetch can stop waiting for one.
_RESOLVER_THREADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="picmetric-dns")


@dataclass(frozen=True)
class FetchedImage:
    """The bytes behind a URL, sniffed to be a supported image but not yet decoded."""

    data: bytes
    url: str  # as the user gave it
    final_url: str  # after redirects
    content_type: str | None  # the media type the server declared, lower-case, without parameters


def fetch_url(
    url: str,
    settings: Settings,
    *,
    resolve: Resolver | None = None,
    connect: Connector | None = None,
    ca_certs: str | None = None,
    max_bytes: int | None = None,
    accept: Callable[[bytes], object] | None = None,
    limit_for: Callable[[bytes], int] | None = None,
) -> FetchedImage:
    """Download one image from an http(s) URL, refusing anything that could be abused.

    Redirects are followed by hand, at most ``settings.url_max_redirects``, each re-checked like the
    first URL. Unless ``settings.allow_private_urls``, a host with *any* private, loopback,
    link-local, multicast, reserved or unspecified address (IPv4 or IPv6, IPv4-mapped included) is
    refused. The body is streamed and abandoned once it passes ``settings.max_image_bytes``. The
    whole fetch (headers included, however slowly they trickle) must finish within the connect plus
    read timeouts; each wait for data within the read timeout. A declared ``text/html`` is refused;
    any other declared type is accepted when the bytes sniff as a supported image (so ``text/plain``
    with JPEG bytes is accepted: servers often mislabel, and decoding never trusts the label anyway).

    Args:
        url: The address the user gave.
        settings: Limits, timeouts and ``allow_private_urls``.
        resolve: Name resolution; :func:`resolve_host` (the system resolver) by default.
        connect: Opens a TCP connection to a vetted ``(ip, port)``; :func:`socket.create_connection`
            by default.
        ca_certs: CA bundle for https; certifi's by default.
        max_bytes: The body's limit; ``settings.max_image_bytes`` by default (videos pass their own).
        accept: Says whether the body's first bytes are a kind we take (truthy) instead of
            :func:`sniff_format`'s images (videos pass their container sniffer).
        limit_for: The body's limit given its first 16 bytes, at most ``max_bytes`` (a batch item, which may
            be a photo or a clip, is held to the limit of what it starts like).

    Returns:
        The bytes and where they finally came from.

    Raises:
        FilterRejected: Control characters, a lone surrogate or bidi controls in the URL, or too long.
        UrlRefused: Not http(s), credentials in the URL, a non-public address, too many redirects.
        FetchFailed: Unknown host, connection failure, timeout, HTTP error status, a web page.
        ImageTooLarge: The body is over ``settings.max_image_bytes``.
        NotAnImage: The body is not a supported image.

    Example:
        >>> fetch_url("file:///etc/passwd", Settings())
        Traceback (most recent call last):
        ...
        picmetric_core.errors.UrlRefused: Refused: only http and https addresses can be fetched, not file.
    """
    check_url_text(url)
    with _Clock(settings) as clock:
        transport = _Transport(resolve or resolve_host, connect or socket.create_connection, ca_certs, clock.watch)
        current = url.strip()
        for _hop in range(settings.url_max_redirects + 1):
            target = _Target.parse(current)
            if clock.expired():
                raise FetchFailed(f"Timed out after {clock.total_s:g} s fetching {_short(url)}.")
            with _translated_errors(target, clock):
                addresses = _vetted_addresses(target, settings, clock.bounded(transport.resolve, target.host))
                with transport.pool(target, addresses) as pool:
                    response = _get(pool, target, clock)
                    try:
                        location = _redirect_location(response)
                        if location is None:
                            return _read_image(url, target, response, settings, clock, max_bytes, accept, limit_for)
                    finally:
                        response.release_conn()
            current = urljoin(target.url, location)
        raise UrlRefused(f"Too many redirects (limit {settings.url_max_redirects}).")


class FetchSlots:
    """At most ``limit`` URL fetches at once in this process; one more is refused at once, not queued.

    Fetches wait on other servers, so without a cap a burst of slow URLs would hold every worker
    thread and stall uploads, history and ``/healthz`` alike.

    Example:
        >>> slots = FetchSlots(1)
        >>> with slots.slot():
        ...     slots.in_use
        1
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.in_use = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the ``with`` block.

        Raises:
            ServerBusy: All ``limit`` slots are taken.
        """
        if not self._free.acquire(blocking=False):
            raise ServerBusy(
                f"The server is already fetching {self.limit} images from the web; try again in a few seconds, "
                "or upload the file instead."
            )
        with self._lock:
            self.in_use += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_use -= 1
            self._free.release()


def resolve_host(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host``, in its order, without repeats.

    Example:
        >>> resolve_host("127.0.0.1", 80)
        ['127.0.0.1']
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_problem(address: str) -> str | None:
    """Why an IP address must not be fetched from, or ``None`` for a public address.

    IPv6 addresses that embed an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64) are judged by the
    embedded address as well.

    Example:
        >>> address_problem("10.0.0.5"), address_problem("::ffff:127.0.0.1"), address_problem("93.184.216.34")
        ('a private address', 'a loopback address', None)
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return address_problem(str(ip.ipv4_mapped))  # the socket really talks IPv4 to this address
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in _embedded_ipv4(ip):
            problem = address_problem(str(embedded))
            if problem:
                return problem
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "a non-public address"),
    )
    return next((reason for failed, reason in checks if failed), None)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> Iterator[ipaddress.IPv4Address]:
    if ip.sixtofour:
        yield ip.sixtofour
    if ip.teredo:
        yield ip.teredo[1]
    if ip in _NAT64:
        yield ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


@dataclass(frozen=True)
class _Target:
    """One hop's URL, taken apart the same way the connection pool will use it."""

    url: str
    scheme: str
    host: str  # without IPv6 brackets
    port: int
    request_uri: str

    @classmethod
    def parse(cls, url: str) -> _Target:
        if not url:
            raise UrlRefused("Enter a web address starting with http:// or https://.")
        try:
            parsed = parse_url(url)
        except LocationParseError:
            raise UrlRefused(f"Refused: {_short(url)} is not a valid web address.") from None
        if parsed.scheme not in ("http", "https"):
            if parsed.scheme is None:
                raise UrlRefused(f"Refused: {_short(url)} is not a web address; start it with https://.")
            raise UrlRefused(f"Refused: only http and https addresses can be fetched, not {parsed.scheme}.")
        if parsed.auth is not None:
            raise UrlRefused("Refused: addresses with a user name or password are not fetched.")
        if not parsed.host:
            raise UrlRefused(f"Refused: {_short(url)} has no host name.")
        host = parsed.host.removeprefix("[").removesuffix("]")
        default_port = 443 if parsed.scheme == "https" else 80
        return cls(url, parsed.scheme, host, parsed.port or default_port, parsed.request_uri)


def _vetted_addresses(target: _Target, settings: Settings, resolve: Resolver) -> tuple[str, ...]:
    """The host's addresses, all of them checked: one bad address refuses the host."""
    literal = _ip_literal(target.host)
    try:
        addresses = (literal,) if literal else tuple(resolve(target.host, target.port))
    except (OSError, UnicodeError):
        raise FetchFailed(f"Could not find the server {target.host}.") from None
    if not addresses:
        raise FetchFailed(f"Could not find the server {target.host}.")
    if settings.allow_private_urls:
        return addresses
    for address in addresses:
        problem = address_problem(address)
        if problem and literal:
            raise UrlRefused(f"Refused: {target.host} is {problem}.")
        if problem:
            raise UrlRefused(f"Refused: {target.host} resolves to {problem} ({address}).")
    return addresses


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0])) if host else None
    except ValueError:
        return None


class _PinnedMixin:
    """Dials only the vetted addresses; everything else (Host header, SNI, certificate) uses the name."""

    def __init__(self, *args: Any, pin: _Pin, **kwargs: Any) -> None:
        self._pin = pin
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        return self._pin.dial(self)  # type: ignore[arg-type]


class _PinnedHTTPConnection(_PinnedMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedMixin, HTTPSConnection):
    pass


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


@dataclass(frozen=True)
class _Pin:
    addresses: tuple[str, ...]
    connect: Connector
    on_connect: Callable[[socket.socket], None]

    def dial(self, conn: HTTPConnection) -> socket.socket:
        """Connect to the first vetted address that answers, translated into urllib3's errors."""
        timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
        last_error: OSError | None = None
        for address in self.addresses:
            try:
                sock = self.connect((address, conn.port), timeout)
            except TimeoutError as exc:
                raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out.") from exc
            except OSError as exc:
                last_error = exc
                continue
            self.on_connect(sock)
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            return sock
        raise NewConnectionError(conn, f"Failed to establish a new connection: {last_error}")


@dataclass(frozen=True)
class _Transport:
    resolve: Resolver
    connect: Connector
    ca_certs: str | None
    on_connect: Callable[[socket.socket], None]

    @contextmanager
    def pool(self, target: _Target, addresses: tuple[str, ...]) -> Iterator[HTTPConnectionPool]:
        """A one-connection pool for this hop, pinned to ``addresses`` and closed afterwards."""
        pin = _Pin(addresses, self.connect, self.on_connect)
        pool: HTTPConnectionPool
        if target.scheme == "https":
            pool = _PinnedHTTPSPool(
                target.host,
                target.port,
                maxsize=1,
                retries=False,
                cert_reqs="CERT_REQUIRED",
                ca_certs=self.ca_certs or certifi.where(),
                pin=pin,
            )
        else:
            pool = _PinnedHTTPPool(target.host, target.port, maxsize=1, retries=False, pin=pin)
        try:
            yield pool
        finally:
            pool.close()


class _Clock:
    """The fetch's time budget: per-step connect and read timeouts inside one overall deadline.

    Used as a context manager: while it is open a watchdog timer shuts down every socket handed to
    :meth:`watch` once the deadline passes, so no read (of headers or body) can outlast it.
    """

    def __init__(self, settings: Settings) -> None:
        self.connect_s = settings.url_connect_timeout_s
        self.read_s = settings.url_read_timeout_s
        self.total_s = self.connect_s + self.read_s
        self.deadline = time.monotonic() + self.total_s
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        self._watchdog = threading.Timer(self.total_s, self._cut_all)
        self._watchdog.daemon = True

    def __enter__(self) -> _Clock:
        self._watchdog.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._watchdog.cancel()

    def watch(self, sock: socket.socket) -> None:
        """Cut ``sock`` at the deadline (at once if it has passed)."""
        with self._lock:
            self._sockets.append(sock)
            cut = self._cut
        if cut:
            _shut(sock)

    def _cut_all(self) -> None:
        with self._lock:
            self._cut = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def expired(self) -> bool:
        return self._cut or time.monotonic() >= self.deadline

    def bounded(self, resolve: Resolver, host: str) -> Resolver:
        """``resolve`` waited for until the deadline (a lookup still running then is left to finish alone)."""

        def within_deadline(name: str, port: int) -> Sequence[str]:
            future = _RESOLVER_THREADS.submit(resolve, name, port)
            try:
                return future.result(timeout=max(self.deadline - time.monotonic(), 0.001))
            except FutureTimeout:
                raise FetchFailed(f"Timed out after {self.total_s:g} s looking up {host}.") from None

        return within_deadline

    def timeout(self) -> Timeout:
        remaining = max(self.deadline - time.monotonic(), 0.001)
        return Timeout(connect=min(self.connect_s, remaining), read=min(self.read_s, remaining))


def _shut(sock: socket.socket) -> None:
    """Wake any thread blocked reading ``sock``: its read returns or fails at once."""
    with suppress(OSError):  # already closed or never connected: nothing is waiting on it
        sock.shutdown(socket.SHUT_RDWR)


def _get(pool: HTTPConnectionPool, target: _Target, clock: _Clock) -> HTTPResponse:
    headers = {"User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity"}
    response = pool.urlopen(
        "GET",
        target.request_uri,
        headers=headers,
        redirect=False,
        retries=False,
        preload_content=False,
        timeout=clock.timeout(),
    )
    assert isinstance(response, HTTPResponse)
    return response


def _redirect_location(response: HTTPResponse) -> str | None:
    """Where a redirect points, ``None`` for a success; any other status is a refusal."""
    if response.status in REDIRECT_STATUSES:
        location = response.headers.get("Location")
        if not location:
            raise FetchFailed(f"The server answered {_status_text(response)} but did not say where to go.")
        return location
    if not 200 <= response.status < 300:
        raise FetchFailed(f"The server answered {_status_text(response)}.")
    return None


def _read_image(
    url: str,
    target: _Target,
    response: HTTPResponse,
    settings: Settings,
    clock: _Clock,
    max_bytes: int | None = None,
    accept: Callable[[bytes], object] | None = None,
    limit_for: Callable[[bytes], int] | None = None,
) -> FetchedImage:
    media_type = _media_type(response.headers.get("Content-Type"))
    if media_type in WEB_PAGE_TYPES:
        raise FetchFailed(
            f"{_short(target.url)} is a web page, not an image. "
            "Use the address of the image itself (right-click the picture and copy the image address)."
        )
    data = _read_body(response, max_bytes or settings.max_image_bytes, clock, target, limit_for)
    if accept is not None:
        if not data:
            raise NotAnImage("The address gave an empty file.")
        if not accept(data[:16]):
            raise NotAnImage(f"The server sent {media_type or 'a file'} that is not a kind PicMetric reads here.")
        return FetchedImage(data=data, url=url, final_url=target.url, content_type=media_type)
    if sniff_format(data) is None:
        if data and media_type and not _may_be_image(media_type):
            raise FetchFailed(f"The server sent {media_type}, not an image.")
        raise NotAnImage("The address gave an empty file." if not data else NOT_AN_IMAGE_MESSAGE)
    return FetchedImage(data=data, url=url, final_url=target.url, content_type=media_type)


def _read_body(
    response: HTTPResponse,
    max_bytes: int,
    clock: _Clock,
    target: _Target,
    limit_for: Callable[[bytes], int] | None = None,
) -> bytes:
    """The body, stopping as soon as it passes its limit (``max_bytes``, or less by ``limit_for`` once its first
    bytes are in) or the overall deadline."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_many_bytes(int(declared), max_bytes)
    chunks: list[bytes] = []
    received = 0
    limit = max_bytes
    # read1 returns whatever one socket read brings, so a server dripping bytes cannot outlast the deadline.
    while chunk := response.read1(_CHUNK, decode_content=True):
        if limit_for is not None and received < _SNIFF_BYTES <= received + len(chunk):
            limit = min(max_bytes, limit_for(b"".join([*chunks, chunk])[:_SNIFF_BYTES]))
            if declared.isdigit() and int(declared) > limit:
                raise too_many_bytes(int(declared), limit)
        received += len(chunk)
        if received > limit:
            raise ImageTooLarge(f"The file is larger than the limit of {format_size(limit)}.")
        if clock.expired():
            raise FetchFailed(f"Timed out after {clock.total_s:g} s fetching {_short(target.url)}.")
        chunks.append(chunk)
    if clock.expired():  # the watchdog's shutdown ends a body early without an error
        raise FetchFailed(f"Timed out after {clock.total_s:g} s fetching {_short(target.url)}.")
    return b"".join(chunks)


@contextmanager
def _translated_errors(target: _Target, clock: _Clock) -> Iterator[None]:
    """urllib3 and socket failures as messages for a user; our own refusals pass through."""
    try:
        yield
    except PicMetricError:
        raise
    except (HTTPError, OSError, ValueError) as exc:
        raise _failure(exc, target, clock) from exc


def _failure(error: Exception, target: _Target, clock: _Clock) -> FetchFailed:
    if clock.expired():  # whatever the watchdog's cut looked like to the reader
        return FetchFailed(f"Timed out after {clock.total_s:g} s fetching {_short(target.url)}.")
    if isinstance(error, NewConnectionError):
        return FetchFailed(f"Could not connect to {target.host}.")
    if isinstance(error, ConnectTimeoutError):
        return FetchFailed(f"Timed out after {clock.connect_s:g} s connecting to {target.host}.")
    if isinstance(error, ReadTimeoutError):
        return FetchFailed(f"Timed out after {clock.read_s:g} s fetching {_short(target.url)}.")
    if isinstance(error, SSLError):
        return FetchFailed(f"The secure connection to {target.host} failed (its certificate could not be verified).")
    return FetchFailed(f"The connection to {target.host} failed while fetching {_short(target.url)}.")


def _media_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def _may_be_image(media_type: str) -> bool:
    return media_type.startswith("image/") or media_type in ("application/octet-stream", "binary/octet-stream")


def _status_text(response: HTTPResponse) -> str:
    try:
        phrase = http.HTTPStatus(response.status).phrase
    except ValueError:
        phrase = response.reason or ""
    return f"{response.status} {phrase}".strip()


def _short(url: str, limit: int = 100) -> str:
    return url if len(url) <= limit else url[: limit - 1] + "…"
