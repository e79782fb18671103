"""``python -m tests.support.live_app run streamlit_app.py …``: the app as ``streamlit`` would run it, with
WebRTC kept on loopback (:func:`tests.support.live.loopback_ice`). Each attempt to reach another address
is written, one a line, to the file named by ``PICMETRIC_TEST_OUTSIDE_LOG``; the number of live-stream
worker threads alive is rewritten twice a second to ``PICMETRIC_TEST_LIVE_THREADS`` (so a test sees STOP
free them). Tests only.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from tests.support.live import loopback_ice


class _Written(list):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def append(self, item: str) -> None:
        super().append(item)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(item + "\n")


def _count_live_workers(path: str) -> None:
    while True:
        alive = sum(thread.name.startswith("picmetric-live-") for thread in threading.enumerate())
        with open(path, "w", encoding="utf-8") as out:
            out.write(str(alive))
        time.sleep(0.5)


def main() -> None:
    from streamlit.web import cli

    threading.Thread(
        target=_count_live_workers, args=(os.environ["PICMETRIC_TEST_LIVE_THREADS"],), name="live-count", daemon=True
    ).start()

    with loopback_ice(_Written(os.environ["PICMETRIC_TEST_OUTSIDE_LOG"])):
        sys.argv = ["streamlit", *sys.argv[1:]]
        cli.main()


if __name__ == "__main__":
    main()
