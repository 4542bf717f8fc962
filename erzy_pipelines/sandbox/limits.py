"""Per-key sliding-window rate limiting, as the real API does it (every window enforced).

Choices where the docs say [unknown]:

* ``X-RateLimit-*`` headers describe the window with the fewest requests remaining after this
  request; on a tie, the one whose next free slot comes later (the longer window, in practice).
* ``X-RateLimit-Reset`` is the Unix time (integer seconds, rounded up) at which the oldest
  request still counted in that window leaves it, i.e. when ``Remaining`` next goes up. An empty
  window reports the current time.
* ``Retry-After`` on 429 is the whole number of seconds (rounded up, at least 1) until every full
  window has a free slot.
* A request answered 429 does not count toward any window. Neither does a 401 (an unknown key
  has no budget): those responses carry headers for the presented key without spending it.
* Windows live in memory only; a restart forgets them even with ``db_path``.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from erzy_pipelines.core.budget import RateWindow


@dataclass(frozen=True)
class Decision:
    """The outcome of one check: allowed or not, and the headers that describe it."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int | None = None

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if self.retry_after is not None:
            out["Retry-After"] = str(self.retry_after)
        return out


class SlidingWindowLimiter:
    """A log of request times per bucket (the API key), checked against every window."""

    def __init__(
        self,
        windows: tuple[RateWindow, ...],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._wall = wall
        self._logs: dict[str, list[float]] = {}
        self.set_windows(windows)

    @property
    def windows(self) -> tuple[RateWindow, ...]:
        return self._windows

    def set_windows(self, windows: tuple[RateWindow, ...]) -> None:
        windows = tuple(RateWindow(int(n), float(s)) for n, s in windows)
        if not windows or any(n < 1 or s <= 0 for n, s in windows):
            raise ValueError("rate limit windows must be non-empty (requests >= 1, seconds > 0)")
        with self._lock:
            self._windows = windows

    def reset(self) -> None:
        with self._lock:
            self._logs.clear()

    def check(self, bucket: str) -> Decision:
        """Count one request for ``bucket`` if every window has room; else refuse it."""
        return self._decide(bucket, record=True)

    def peek(self, bucket: str) -> Decision:
        """Describe ``bucket`` without spending anything (for responses that must not count)."""
        return self._decide(bucket, record=False)

    def _decide(self, bucket: str, record: bool) -> Decision:
        with self._lock:
            now = self._clock()
            log = self._logs.setdefault(bucket, [])
            longest = max(s for _, s in self._windows)
            del log[: bisect.bisect_right(log, now - longest)]
            counts = [len(log) - bisect.bisect_right(log, now - s) for _, s in self._windows]
            full = [i for i, (n, _) in enumerate(self._windows) if counts[i] >= n]
            allowed = not full
            if allowed and record:
                log.append(now)
                counts = [c + 1 for c in counts]
            # (remaining, -seconds until a slot frees) picks the tightest window.
            states = []
            for (n, s), c in zip(self._windows, counts, strict=True):
                oldest = log[len(log) - c] if c else None
                frees_in = (oldest + s - now) if oldest is not None else 0.0
                states.append((max(n - c, 0), -frees_in, n, frees_in))
            remaining, _, limit, frees_in = min(states)
            wall = self._wall()
            retry_after = None
            if not allowed:
                wait = max(states[i][3] for i in full)
                retry_after = max(1, math.ceil(wait))
            return Decision(allowed, limit, remaining, math.ceil(wall + frees_in), retry_after)

    def blocked(self, seconds: float = 1.0) -> Decision:
        """A synthetic refusal (the burst_429 fault): the tightest limit, nothing remaining."""
        limit = min(n for n, _ in self._windows)
        return Decision(False, limit, 0, math.ceil(self._wall() + seconds), math.ceil(seconds))
