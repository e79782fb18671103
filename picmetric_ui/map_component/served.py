"""The folder Streamlit serves the map component from: its page and script, and the map's data files.

Streamlit serves every file under a component's folder at ``/component/<name>/<file>``, to anyone who can
reach the server (as it serves ``st.image``'s media), so a data file is named by an HMAC of its content
under a secret of this process: the same data keeps its name (the browser fetches it once), and nobody
can guess a name. Files are stored gzipped (once; 4 MiB of points at 100,000 photos become ~1 MiB), which
Streamlit sends as they are and the browser inflates natively; uncompressed, Streamlit would gzip them again on
every request. A hovered photo's thumbnail is served the same way, as the JPEG it is (``publish_jpeg``: gzip
saves nothing on it, and the frame's ``<img>`` loads it straight from its name). The folder is made per
process (the page and script copied in: Streamlit refuses files whose real path lies outside the folder) and
removed at exit; old data files are pruned.
"""

from __future__ import annotations

import atexit
import contextlib
import gzip
import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

FRONTEND = Path(__file__).with_name("frontend")
GZIP_LEVEL = 1  # 50 ms for 100,000 points; higher levels save little on these columns
KEEP_FILES = 64  # data files kept besides the ones written in the last KEEP_S seconds
SERVED = ("*.bin.gz", "*.jpg")  # what ``publish`` and ``publish_jpeg`` write (the page and script are kept)
KEEP_S = 600  # the page's caches keep a file's name for at most 30 s; a file this young may still be drawn


class ServedFolder:
    """One process's served folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="picmetric-map-"))
        for source in FRONTEND.iterdir():
            if source.is_file():
                shutil.copyfile(source, self.root / source.name)
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)

    def publish(self, data: bytes, kind: str) -> str:
        """Serves ``data`` (gzipped); returns its file's name (relative to the component's page)."""
        return self._serve(f"{kind}-{self._tag(data)}.bin.gz", lambda: gzip.compress(data, GZIP_LEVEL, mtime=0))

    def publish_jpeg(self, jpeg: bytes, kind: str) -> str:
        """Serves a JPEG as it is (its name ends ``.jpg``, so it is sent as ``image/jpeg``); returns its name."""
        return self._serve(f"{kind}-{self._tag(jpeg)}.jpg", lambda: jpeg)

    def _tag(self, data: bytes) -> str:
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()[:40]

    def _serve(self, name: str, content: Callable[[], bytes]) -> str:
        path = self.root / name
        if path.exists():
            path.touch()  # recently used: pruned last
            return name
        partial = path.with_name(f"{name}.{threading.get_ident()}.part")
        partial.write_bytes(content())
        os.replace(partial, path)
        self._prune()
        return name

    def _prune(self) -> None:
        with self._lock:
            found = [path for pattern in SERVED for path in self.root.glob(pattern)]
            files = sorted(found, key=_mtime, reverse=True)
            now = time.time()
            for old in files[KEEP_FILES:]:
                if now - _mtime(old) > KEEP_S:
                    with contextlib.suppress(OSError):
                        old.unlink()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
