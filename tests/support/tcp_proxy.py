"""A TCP proxy on 127.0.0.1 that can pass, black-hole or cut the traffic to a real server.

Tests and ``bench/soak.py`` put it between PicMetric and Postgres or the S3 server to play a network
that goes silent (packets are still acknowledged, nothing is answered) or drops every connection.

Example:
    >>> with TcpProxy(("127.0.0.1", 5432)) as proxy:  # doctest: +SKIP
    ...     url = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
    ...     proxy.black_hole()
"""

from __future__ import annotations

import select
import socket
import threading
from contextlib import suppress
from typing import Literal

Mode = Literal["pass", "black_hole", "cut"]
_POLL_S = 0.05


class TcpProxy:
    """Forwards connections to ``target`` while in ``pass`` mode.

    ``black_hole``: connections (old and new) stay open and every byte sent is read, but nothing is
    forwarded either way. ``cut``: every open connection is closed and new ones are closed at once.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode: Mode = "pass"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._thread = threading.Thread(target=self._accept, name=f"tcp-proxy-{self.port}", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def restore(self) -> None:
        self.mode = "pass"

    def black_hole(self) -> None:
        self.mode = "black_hole"

    def cut(self) -> None:
        self.mode = "cut"
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.mode == "cut":
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._stopped.is_set():
                readable, _, _ = select.select(list(peers), [], [], _POLL_S)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if self.mode == "pass":
                        peers[sock].sendall(data)
                    # black_hole: the bytes were read (so the sender sees them acknowledged) and dropped
        except (OSError, ValueError):
            return  # cut, or closed by the other side
        finally:
            _close(client, upstream)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with suppress(OSError):
            sock.close()
