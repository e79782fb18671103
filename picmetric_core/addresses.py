"""Which network addresses only this machine can reach: the rule every server PicMetric starts keeps to."""

from __future__ import annotations

import ipaddress


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP, ``[v6]``, ``localhost``) is reachable from this machine only.

    A dual-stack socket bound to ``::ffff:127.0.0.1`` counts; a host name other than ``localhost``
    does not, since it resolves to whatever the network says.

    Example:
        >>> [is_loopback(a) for a in ("127.0.0.1", "localhost", "[::1]", "::ffff:127.0.0.1", "0.0.0.0", "::")]
        [True, True, True, True, False, False]
    """
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
