"""Jittered, capped exponential backoff — one small pure function, used by every retry."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1 = first retry), "full jitter" style.

    The ceiling grows as ``base * 2**(attempt-1)`` up to ``cap``; the delay is drawn uniformly
    between half the ceiling and the ceiling, so retries of many workers spread out without
    ever collapsing to zero.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    ceiling = min(cap, base * 2 ** min(attempt - 1, 62))
    draw = (rng or random).random()
    return ceiling / 2 + draw * ceiling / 2
