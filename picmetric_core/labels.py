"""How scores are written for people, the same on the overlays, the charts, the tables and the captions."""

from __future__ import annotations

import math


def percent(score: float) -> str:
    """A confidence as a whole percentage, rounded down so that nothing short of certain reads 100 %.

    Example:
        >>> percent(0.6449), percent(0.9996), percent(1.0)
        ('64%', '99%', '100%')
    """
    return f"{math.floor(round(score * 100, 6))}%"
