"""WebRTC on loopback only, for the Live page's tests: aioice offers 127.0.0.1 as its one host candidate
(by default it leaves loopback out), and every STUN check or media packet to another address is recorded.

Also frames for the tests: darknet's dog.jpg as PyAV video frames and as a Y4M clip for Chromium's fake
camera.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from tests.support.photos import darknet_photo

LOOPBACK = "127.0.0.1"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@contextmanager
def loopback_ice(outside: list[str]) -> Iterator[None]:
    """Within the block, aioice gathers 127.0.0.1 only and appends to ``outside`` each address other than
    loopback that a STUN message or a data packet is sent to (the packet is not sent)."""
    from aioice import ice

    original = ice.get_host_addresses, ice.StunProtocol.send_stun, ice.StunProtocol.send_data

    def send_stun(self, message, addr):
        if not is_loopback(addr[0]):
            outside.append(f"stun {addr[0]}:{addr[1]}")
            return None
        return original[1](self, message, addr)

    async def send_data(self, data, addr):
        if not is_loopback(addr[0]):
            outside.append(f"data {addr[0]}:{addr[1]}")
            return None
        return await original[2](self, data, addr)

    ice.get_host_addresses = lambda use_ipv4, use_ipv6: [LOOPBACK] if use_ipv4 else []
    ice.StunProtocol.send_stun = send_stun
    ice.StunProtocol.send_data = send_data
    try:
        yield
    finally:
        ice.get_host_addresses, ice.StunProtocol.send_stun, ice.StunProtocol.send_data = original


def dog_rgb(width: int = 640, height: int = 480) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(darknet_photo("dog.jpg"))), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def write_y4m(path: Path, rgb: np.ndarray, frames: int = 30, fps: int = 15) -> Path:
    """A raw 4:2:0 Y4M clip of ``rgb`` (even sides) for ``--use-file-for-fake-video-capture``."""
    height, width = rgb.shape[:2]
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes()
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + yuv)
    return path
