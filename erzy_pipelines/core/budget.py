"""Request budgets: how long a number of requests takes under a key's rate-limit windows.

Pure arithmetic, so the plan, the asset metadata and the CLI all quote the same ETA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple


class RateWindow(NamedTuple):
    """At most ``limit`` requests in any ``seconds``-long sliding window.

    The one window type of the package: the client's limiter, the shared budget in the state
    database, the sandbox and the ETA all use it. A tuple, so ``(60, 60.0)`` is one too.
    """

    limit: int
    seconds: float


#: The documented production plan: 60 requests per minute and 1,000 per hour, per key.
DEFAULT_RATE_LIMITS = "60/60,1000/3600"


def parse_rate_limits(text: str) -> tuple[RateWindow, ...]:
    """Parse ``"60/60,1000/3600"`` (requests/seconds, comma-separated) into windows.

    Raises ``ValueError`` with a message that says what to fix.
    """
    windows = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            limit_text, seconds_text = part.split("/")
            window = RateWindow(int(limit_text), float(seconds_text))
        except ValueError:
            raise ValueError(
                f"{part!r} is not 'requests/seconds' (e.g. '60/60,1000/3600')"
            ) from None
        if window.limit < 1 or window.seconds <= 0:
            raise ValueError(f"{part!r} must have requests >= 1, seconds > 0")
        windows.append(window)
    if not windows:
        raise ValueError("no window given; use e.g. '60/60,1000/3600'")
    return tuple(windows)


DEFAULT_WINDOWS: tuple[RateWindow, ...] = parse_rate_limits(DEFAULT_RATE_LIMITS)


def seconds_for_requests(requests: int, windows: Sequence[RateWindow] = DEFAULT_WINDOWS) -> float:
    """Shortest time to send ``requests`` requests from an idle key without exceeding any window.

    The k-th request (0-based) can go out no earlier than ``(k // limit) * seconds`` for each
    window, so the last one sets the duration.
    """
    if requests <= 0:
        return 0.0
    return max(((requests - 1) // w.limit) * w.seconds for w in windows)


def requests_within(seconds: float, windows: Sequence[RateWindow] = DEFAULT_WINDOWS) -> int:
    """How many requests fit in ``seconds`` from an idle key (inverse of seconds_for_requests)."""
    if seconds < 0:
        return 0
    return min((math.floor(seconds / w.seconds) + 1) * w.limit for w in windows)


def format_duration(seconds: float) -> str:
    """Human duration: '45s', '12m 30s', '3h 05m', '2d 04h'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600:02d}h"
