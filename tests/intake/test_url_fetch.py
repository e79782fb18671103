"""URL fetching against a real HTTP(S) server on 127.0.0.1, serving a real photo.

There is no public DNS or internet in the test environment. Where a test needs a *public* host, it
injects two things and says so: a resolver that plays DNS for ``photos.example`` (answering the
public address ``PUBLIC_IP``), and a connector that plays the internet route to ``PUBLIC_IP``
(delivering that one connection to the loopback server). Everything between — parsing, vetting every
address, pinning the connection to the vetted address, Host header, TLS, redirect re-checks — is the
production code path, and the connector records every address actually dialled.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from picmetric_core.config import Settings
from picmetric_core.errors import FetchFailed, ImageTooLarge, NotAnImage, PicMetricError, UrlRefused
from picmetric_core.intake.fetch import address_problem, fetch_url
from picmetric_core.intake.images import decode_for

PUBLIC_IP = "93.184.216.34"  # a public address (example.com's long-time one); never actually reached
HUGE_BYTES = 5 * 1024 * 1024
HUNG_UP = (BrokenPipeError, ConnectionResetError, ssl.SSLError)  # the client stopped reading on purpose


def _jpeg(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


CHELSEA_JPG = _jpeg(data.chelsea())


class PhotoHandler(BaseHTTPRequestHandler):
    """The routes a fetch can meet in the wild; ``/hops/N`` redirects N times before the photo."""

    server: PhotoServer

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host")))
        path = self.path.split("?", 1)[0]
        if path.startswith("/hops/"):
            return self._hops(int(path.removeprefix("/hops/")))
        route = {
            "/photo.jpg": lambda: self._send(200, CHELSEA_JPG, "image/jpeg"),
            "/no-type.jpg": lambda: self._send(200, CHELSEA_JPG, None),
            "/mislabelled.jpg": lambda: self._send(200, CHELSEA_JPG, "text/plain"),
            "/octet.jpg": lambda: self._send(200, CHELSEA_JPG, "application/octet-stream"),
            "/page.html": lambda: self._send(200, b"<!doctype html><img src=/photo.jpg>", "text/html; charset=utf-8"),
            "/notes.txt": lambda: self._send(200, b"just text", "text/plain"),
            "/drawing.svg": lambda: self._send(200, b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
            "/empty.jpg": lambda: self._send(200, b"", "image/jpeg"),
            "/missing.jpg": lambda: self._send(404, b"nope", "text/plain"),
            "/to-loopback": lambda: self._redirect(f"http://127.0.0.1:{self.server.port}/photo.jpg"),
            "/to-ftp": lambda: self._redirect("ftp://photos.example/photo.jpg"),
            "/slow.jpg": self._slow,
            "/drip.jpg": self._drip,
            "/huge-declared.jpg": self._huge_declared,
            "/huge-streamed.jpg": self._huge_streamed,
        }.get(path)
        if route is None:
            return self._send(404, b"", "text/plain")
        return route()

    def _send(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _hops(self, remaining: int) -> None:
        if remaining == 0:
            return self._send(200, CHELSEA_JPG, "image/jpeg")
        return self._redirect(f"/hops/{remaining - 1}")

    def _slow(self) -> None:
        self.server.stopping.wait(3)
        self._send(200, CHELSEA_JPG, "image/jpeg")

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        with contextlib.suppress(*HUNG_UP):
            self._drip_bytes()

    def _drip_bytes(self) -> None:
        for byte in CHELSEA_JPG:
            if self.server.stopping.wait(0.05):
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def _huge_declared(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(HUGE_BYTES))
        self.end_headers()
        with contextlib.suppress(*HUNG_UP):
            self.wfile.write(CHELSEA_JPG[:4] + bytes(HUGE_BYTES - 4))

    def _huge_streamed(self) -> None:
        self.send_response(200)  # HTTP/1.0, no Content-Length: the body ends when the connection does
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        with contextlib.suppress(*HUNG_UP):
            self._write_huge_body()

    def _write_huge_body(self) -> None:
        for _ in range(HUGE_BYTES // 65536):
            self.wfile.write(CHELSEA_JPG[:4] + bytes(65532))

    def log_message(self, format, *args) -> None:
        pass


class PhotoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), PhotoHandler)
        self.seen: list[tuple[str, str | None]] = []
        self.stopping = threading.Event()
        self.port = self.server_address[1]
        if tls:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def _serve(server: PhotoServer) -> Iterator[PhotoServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[PhotoServer]:
    yield from _serve(PhotoServer())


@dataclass
class Internet:
    """Plays DNS and the route to public addresses; see the module docstring for why."""

    port: int
    dns: dict[str, list[str]]
    dialled: list[tuple[str, int]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.dns:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.dns[host]

    def connect(self, address: tuple[str, int], timeout: float | None) -> socket.socket:
        self.dialled.append(address)
        if address[0] != PUBLIC_IP:
            raise AssertionError(f"dialled a non-public address {address}")
        return socket.create_connection(("127.0.0.1", self.port), timeout)


def settings(**overrides) -> Settings:
    base = {
        "allow_private_urls": False,
        "url_connect_timeout_s": 2.0,
        "url_read_timeout_s": 5.0,
        "url_max_redirects": 5,
        "max_image_bytes": 20 * 1024 * 1024,
    }
    return Settings(**{**base, **overrides})


LOCAL = settings(allow_private_urls=True)


def refusal(error: PicMetricError) -> str:
    """The message, checked to be one a user can read: no trace, no library internals."""
    message = str(error)
    for leak in ("Traceback", "urllib3", "HTTPConnection", "object at 0x", "Errno"):
        assert leak not in message
    return message


# --- what a user normally does ----------------------------------------------------------------


def test_loopback_photo_fetches_when_private_urls_are_allowed(server):
    fetched = fetch_url(server.url("/photo.jpg"), LOCAL)

    assert fetched.data == CHELSEA_JPG
    assert fetched.url == fetched.final_url == server.url("/photo.jpg")
    assert fetched.content_type == "image/jpeg"
    assert decode_for(LOCAL, fetched.data).rgb.shape == (300, 451, 3)


def test_public_host_fetches_over_a_connection_pinned_to_its_vetted_address(server):
    internet = Internet(server.port, {"photos.example": [PUBLIC_IP]})

    fetched = fetch_url(
        server.url("/photo.jpg", host="photos.example"), settings(), resolve=internet.resolve, connect=internet.connect
    )

    assert fetched.data == CHELSEA_JPG
    assert internet.dialled == [(PUBLIC_IP, server.port)]
    assert ("/photo.jpg", f"photos.example:{server.port}") in server.seen  # Host header kept the name


def test_two_redirects_are_followed(server):
    fetched = fetch_url(server.url("/hops/2"), LOCAL)

    assert fetched.data == CHELSEA_JPG
    assert fetched.url == server.url("/hops/2")
    assert fetched.final_url == server.url("/hops/0")


def test_redirects_up_to_the_limit_are_followed(server):
    assert fetch_url(server.url("/hops/5"), LOCAL).final_url == server.url("/hops/0")


def test_one_redirect_over_the_limit_is_refused(server):
    with pytest.raises(UrlRefused) as caught:
        fetch_url(server.url("/hops/6"), LOCAL)

    assert refusal(caught.value) == "Too many redirects (limit 5)."


@pytest.mark.parametrize("path", ["/no-type.jpg", "/octet.jpg"])
def test_missing_or_generic_content_type_is_accepted_when_the_bytes_are_an_image(server, path):
    fetched = fetch_url(server.url(path), LOCAL)

    assert fetched.data == CHELSEA_JPG


def test_jpeg_mislabelled_as_text_plain_is_accepted_by_sniffing(server):
    # Decision: servers mislabel images often, and decoding never trusts the label, so JPEG bytes
    # served as text/plain are accepted; the declared type is still reported as it was.
    fetched = fetch_url(server.url("/mislabelled.jpg"), LOCAL)

    assert fetched.data == CHELSEA_JPG
    assert fetched.content_type == "text/plain"


# --- server-side request forgery --------------------------------------------------------------


def test_loopback_url_is_refused_when_private_urls_are_not_allowed(server):
    with pytest.raises(UrlRefused) as caught:
        fetch_url(server.url("/photo.jpg"), settings())

    assert refusal(caught.value) == "Refused: 127.0.0.1 is a loopback address."
    assert caught.value.status == 422


@pytest.mark.parametrize(
    "url",
    ["http://[::1]:{port}/photo.jpg", "http://2130706433:{port}/photo.jpg", "http://[::ffff:127.0.0.1]:{port}/x.jpg"],
)
def test_loopback_in_other_spellings_is_refused(server, url):
    with pytest.raises(UrlRefused, match="loopback"):
        fetch_url(url.format(port=server.port), settings())


def test_redirect_from_a_public_host_into_loopback_is_refused(server):
    internet = Internet(server.port, {"photos.example": [PUBLIC_IP]})

    with pytest.raises(UrlRefused) as caught:
        fetch_url(
            server.url("/to-loopback", host="photos.example"),
            settings(),
            resolve=internet.resolve,
            connect=internet.connect,
        )

    assert refusal(caught.value) == "Refused: 127.0.0.1 is a loopback address."
    assert internet.dialled == [(PUBLIC_IP, server.port)]  # the second hop was never dialled


def test_host_resolving_to_a_private_address_is_refused():
    internet = Internet(0, {"example.internal": ["10.0.0.5"]})

    with pytest.raises(UrlRefused) as caught:
        fetch_url("https://example.internal/cat.jpg", settings(), resolve=internet.resolve, connect=internet.connect)

    assert refusal(caught.value) == "Refused: example.internal resolves to a private address (10.0.0.5)."
    assert internet.dialled == []


def test_one_private_address_among_public_ones_refuses_the_host():
    internet = Internet(0, {"photos.example": [PUBLIC_IP, "::ffff:169.254.169.254"]})

    with pytest.raises(UrlRefused, match=r"link-local address \(::ffff:169\.254\.169\.254\)"):
        fetch_url("http://photos.example/cat.jpg", settings(), resolve=internet.resolve, connect=internet.connect)
    assert internet.dialled == []


def test_dns_rebinding_after_the_check_cannot_redirect_the_connection(server):
    # A rebinding DNS server answers a public address to the check and loopback to any later lookup.
    answers = iter([[PUBLIC_IP]])
    internet = Internet(server.port, {})

    def rebinding_resolve(host: str, port: int) -> list[str]:
        internet.lookups.append(host)
        return next(answers, ["127.0.0.1"])

    fetched = fetch_url(
        server.url("/photo.jpg", host="photos.example"),
        settings(),
        resolve=rebinding_resolve,
        connect=internet.connect,
    )

    assert fetched.data == CHELSEA_JPG
    assert internet.lookups == ["photos.example"]  # resolved once, and that answer was used to connect
    assert internet.dialled == [(PUBLIC_IP, server.port)]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "::ffff:10.0.0.5",
        "2002:7f00:1::",
        "64:ff9b::a00:5",
    ],
)
def test_non_public_addresses_are_named(address):
    assert address_problem(address)


@pytest.mark.parametrize("address", [PUBLIC_IP, "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_problem(address) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://photos.example/cat.jpg", "Refused: only http and https addresses can be fetched, not ftp."),
        ("file:///etc/passwd", "Refused: only http and https addresses can be fetched, not file."),
        ("gopher://photos.example/", "Refused: only http and https addresses can be fetched, not gopher."),
        ("photos.example/cat.jpg", "Refused: photos.example/cat.jpg is not a web address; start it with https://."),
        ("", "Enter a web address starting with http:// or https://."),
    ],
)
def test_other_schemes_are_refused(url, expected):
    with pytest.raises(UrlRefused) as caught:
        fetch_url(url, LOCAL)

    assert refusal(caught.value) == expected


@pytest.mark.parametrize("userinfo", ["user:pass@", "user@", ":secret@"])
def test_credentials_in_the_url_are_refused(server, userinfo):
    with pytest.raises(UrlRefused) as caught:
        fetch_url(f"http://{userinfo}127.0.0.1:{server.port}/photo.jpg", LOCAL)

    assert refusal(caught.value) == "Refused: addresses with a user name or password are not fetched."
    assert "secret" not in str(caught.value)


def test_redirect_to_another_scheme_is_refused(server):
    with pytest.raises(UrlRefused, match="not ftp"):
        fetch_url(server.url("/to-ftp"), LOCAL)


# --- what the server sends --------------------------------------------------------------------


def test_web_page_is_refused_with_advice(server):
    with pytest.raises(FetchFailed) as caught:
        fetch_url(server.url("/page.html"), LOCAL)

    message = refusal(caught.value)
    assert message.startswith(f"{server.url('/page.html')} is a web page, not an image.")
    assert "copy the image address" in message


def test_http_error_status_is_reported(server):
    with pytest.raises(FetchFailed) as caught:
        fetch_url(server.url("/missing.jpg"), LOCAL)

    assert refusal(caught.value) == "The server answered 404 Not Found."


def test_text_that_is_not_an_image_is_refused(server):
    with pytest.raises(FetchFailed) as caught:
        fetch_url(server.url("/notes.txt"), LOCAL)

    assert refusal(caught.value) == "The server sent text/plain, not an image."


def test_svg_is_not_an_image_we_read(server):
    with pytest.raises(NotAnImage):
        fetch_url(server.url("/drawing.svg"), LOCAL)


def test_empty_body_is_not_an_image(server):
    with pytest.raises(NotAnImage, match="empty"):
        fetch_url(server.url("/empty.jpg"), LOCAL)


def test_declared_huge_body_is_refused_before_reading(server):
    with pytest.raises(ImageTooLarge) as caught:
        fetch_url(server.url("/huge-declared.jpg"), settings(allow_private_urls=True, max_image_bytes=100 * 1024))

    assert refusal(caught.value) == "The file is 5 MB; the limit is 100 KB."


def test_streamed_huge_body_is_abandoned_past_the_limit(server):
    with pytest.raises(ImageTooLarge) as caught:
        fetch_url(server.url("/huge-streamed.jpg"), settings(allow_private_urls=True, max_image_bytes=100 * 1024))

    assert refusal(caught.value) == "The file is larger than the limit of 100 KB."


# --- time and connection failures -------------------------------------------------------------


def test_slow_server_times_out(server):
    with pytest.raises(FetchFailed) as caught:
        fetch_url(server.url("/slow.jpg"), settings(allow_private_urls=True, url_read_timeout_s=0.3))

    assert refusal(caught.value) == f"Timed out after 0.3 s fetching {server.url('/slow.jpg')}."


def test_dripping_server_cannot_outlast_the_overall_deadline(server):
    # Every byte arrives well within the read timeout; only the overall deadline stops this one.
    slow = settings(allow_private_urls=True, url_connect_timeout_s=0.5, url_read_timeout_s=1.0)

    with pytest.raises(FetchFailed) as caught:
        fetch_url(server.url("/drip.jpg"), slow)

    assert refusal(caught.value) == f"Timed out after 1.5 s fetching {server.url('/drip.jpg')}."


def test_connect_timeout_is_reported():
    # Stands in for a host that silently drops the connection attempt.
    def blackhole(address: tuple[str, int], timeout: float | None) -> socket.socket:
        raise TimeoutError("timed out")

    internet = Internet(0, {"photos.example": [PUBLIC_IP]})
    with pytest.raises(FetchFailed) as caught:
        fetch_url("http://photos.example/cat.jpg", settings(), resolve=internet.resolve, connect=blackhole)

    assert refusal(caught.value) == "Timed out after 2 s connecting to photos.example."


def test_refused_connection_is_reported():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(FetchFailed) as caught:
        fetch_url(f"http://127.0.0.1:{port}/cat.jpg", LOCAL)

    assert refusal(caught.value) == "Could not connect to 127.0.0.1."


def test_unknown_host_is_reported():
    internet = Internet(0, {})

    with pytest.raises(FetchFailed) as caught:
        fetch_url("http://nowhere.example/cat.jpg", settings(), resolve=internet.resolve, connect=internet.connect)

    assert refusal(caught.value) == "Could not find the server nowhere.example."


# --- https: pinned socket, but SNI and certificate checked against the name ------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=photos.example",
         "-addext", "subjectAltName=DNS:photos.example", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tls_files) -> Iterator[PhotoServer]:
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = PhotoServer(tls=context)
    server.sni_names = names  # type: ignore[attr-defined]
    yield from _serve(server)


def test_https_is_pinned_and_verified_against_the_host_name(tls_server, tls_files):
    internet = Internet(tls_server.port, {"photos.example": [PUBLIC_IP]})

    fetched = fetch_url(
        tls_server.url("/photo.jpg", host="photos.example", scheme="https"),
        settings(),
        resolve=internet.resolve,
        connect=internet.connect,
        ca_certs=str(tls_files[0]),
    )

    assert fetched.data == CHELSEA_JPG
    assert internet.dialled == [(PUBLIC_IP, tls_server.port)]
    assert "photos.example" in tls_server.sni_names


def test_https_certificate_for_another_name_is_refused(tls_server, tls_files):
    internet = Internet(tls_server.port, {"other.example": [PUBLIC_IP]})

    with pytest.raises(FetchFailed) as caught:
        fetch_url(
            tls_server.url("/photo.jpg", host="other.example", scheme="https"),
            settings(),
            resolve=internet.resolve,
            connect=internet.connect,
            ca_certs=str(tls_files[0]),
        )

    assert (
        refusal(caught.value)
        == "The secure connection to other.example failed (its certificate could not be verified)."
    )
