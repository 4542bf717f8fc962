"""Request budgets: how long a number of requests takes under a key's rate-limit windows.

Pure arithmetic, so the plan, the asset metadata and the CLI all quote the same ETA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RateWindow:
    """At most ``limit`` requests in any ``seconds``-long sliding window."""

    limit: int
    seconds: float


DEFAULT_WINDOWS: tuple[RateWindow, ...] = (RateWindow(60, 60.0), RateWindow(1000, 3600.0))


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
                f"ERZYCALL_RATE_LIMITS: {part!r} is not 'requests/seconds' (e.g. '60/60,1000/3600')"
            ) from None
        if window.limit < 1 or window.seconds <= 0:
            raise ValueError(f"ERZYCALL_RATE_LIMITS: {part!r} must have requests >= 1, seconds > 0")
        windows.append(window)
    if not windows:
        raise ValueError("ERZYCALL_RATE_LIMITS is empty; use e.g. '60/60,1000/3600'")
    return tuple(windows)


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
