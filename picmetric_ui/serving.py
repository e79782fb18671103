"""How the app is served: the address it listens on and its upload limit, as ``streamlit run`` flags.

``bash bootstrap.sh app`` runs ``python -m picmetric_ui.serving`` and passes what it prints. The
address is 127.0.0.1 unless ``HOST`` names another; a network address is refused unless a sign-in
is configured (``PICMETRIC_APP_PASSWORD``), so that exposing the app, its history and every stored
photo to the network is a deliberate choice. ``.streamlit/config.toml`` also names 127.0.0.1, for
every other way of starting.
"""

from __future__ import annotations

import os
import sys

from picmetric_core.addresses import is_loopback
from picmetric_core.config import Settings, get_settings
from picmetric_ui.upload_limit import upload_limit_mb

DEFAULT_ADDRESS = "127.0.0.1"


class ExposedWithoutSignIn(ValueError):
    """A network address was asked for, but nobody would have to sign in."""


def server_flags(settings: Settings, address: str = DEFAULT_ADDRESS) -> list[str]:
    """The ``streamlit run`` flags for ``address`` and the upload limit (the larger of the image and video limits).

    Example:
        >>> server_flags(Settings(_env_file=None, max_image_bytes=5 * 1024 * 1024, video_max_bytes=50 * 1024 * 1024))
        ['--server.address', '127.0.0.1', '--server.maxUploadSize', '50']

    Raises:
        ExposedWithoutSignIn: ``address`` is reachable from the network and no password is set.
    """
    if not is_loopback(address) and settings.app_password is None:
        raise ExposedWithoutSignIn(
            f"Serving the app on {address} would let anyone on the network analyse photos and read the whole "
            "history. Set PICMETRIC_APP_PASSWORD (in the environment or .env) first, and put HTTPS in front "
            "(README: 'Serving the app to others')."
        )
    return ["--server.address", address, "--server.maxUploadSize", str(upload_limit_mb(settings))]


def main() -> int:
    try:
        print(" ".join(server_flags(get_settings(), os.environ.get("HOST") or DEFAULT_ADDRESS)))
    except ExposedWithoutSignIn as error:
        print(f"picmetric: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
