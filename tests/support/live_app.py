"""``python -m tests.support.live_app run streamlit_app.py …``: the app as ``streamlit`` would run it, with
WebRTC kept on loopback (:func:`tests.support.live.loopback_ice`). Each attempt to reach another address
is written, one a line, to the file named by ``PICMETRIC_TEST_OUTSIDE_LOG``. Tests only.
"""

from __future__ import annotations

import os
import sys

from tests.support.live import loopback_ice


class _Written(list):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def append(self, item: str) -> None:
        super().append(item)
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(item + "\n")


def main() -> None:
    from streamlit.web import cli

    with loopback_ice(_Written(os.environ["PICMETRIC_TEST_OUTSIDE_LOG"])):
        sys.argv = ["streamlit", *sys.argv[1:]]
        cli.main()


if __name__ == "__main__":
    main()
