"""Client-side rate limiting: sliding windows kept in a pluggable store, plus header pacing.

The API enforces every window at once (60/min and 1,000/h); exceeding either costs a 429 and
a wasted request, so the client keeps the same windows itself. The store decides and records a
slot atomically, which lets several processes share one budget (a SQL store lives in ``crm``).

On top of that the limiter reads ``X-RateLimit-*`` headers: when the server reports fewer
requests left than this process believes (someone else is spending the key's budget) and the
remainder is low, it spaces the remaining requests out until ``X-RateLimit-Reset``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from erzy_pipelines.core.budget import DEFAULT_WINDOWS, RateWindow

from .errors import RateLimitedError, RateLimitTimeoutError, parse_retry_after

logger = logging.getLogger("erzy_pipelines.erzycall")


@runtime_checkable
class RateLimitStore(Protocol):
    """Where request timestamps live. Must decide and record atomically."""

    def try_acquire(self, now: float, windows: Sequence[RateWindow]) -> float:
        """Take a slot at ``now`` and return 0.0, or take nothing and return seconds to wait."""
        ...


def wait_for_slot(timestamps: Sequence[float], now: float, windows: Sequence[RateWindow]) -> float:
    """Seconds until every window has a free slot, given ascending ``timestamps``.

    Shared by stores so they agree on the arithmetic: a request at ``t`` occupies each window
    until ``t + seconds``.
    """
    wait = 0.0
    for window in windows:
        in_window = [t for t in timestamps if t > now - window.seconds]
        excess = len(in_window) - window.limit
        if excess >= 0:
            wait = max(wait, in_window[excess] + window.seconds - now)
    return wait


class InMemoryRateLimitStore:
    """A per-process store: a sorted log of acquisition times, pruned to the longest window."""

    def __init__(self) -> None:
        self._log: deque[float] = deque()
        self._lock = threading.Lock()

    def try_acquire(self, now: float, windows: Sequence[RateWindow]) -> float:
        longest = max(w.seconds for w in windows)
        with self._lock:
            while self._log and self._log[0] <= now - longest:
                self._log.popleft()
            wait = wait_for_slot(self._log, now, windows)
            if wait > 0:
                return wait
            self._log.append(now)
            return 0.0


class RateLimiter:
    """Blocks until a request may be sent; both windows are kept.

    ``margin`` seconds are added to every window because the client stamps a request before it
    reaches the server: without it, clock skew of a few milliseconds would cost a 429 right at a
    window's edge. ``clock`` is monotonic, ``wall_clock`` converts ``X-RateLimit-Reset`` (Unix
    seconds) into a wait; both, and ``sleep``, are injectable for instant tests.
    ``pace_from_headers=False`` turns the X-RateLimit-Remaining pacing off (a 429's Retry-After
    still pauses the limiter). ``max_server_pause``: a pause the *server* imposes (Retry-After,
    or pacing from its headers) longer than this raises RateLimitedError instead of sleeping;
    the limiter's own windows are always waited out.
    """

    def __init__(
        self,
        windows: Sequence[RateWindow] = DEFAULT_WINDOWS,
        store: RateLimitStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        wall_clock: Callable[[], float] = time.time,
        margin: float = 0.1,
        low_water_fraction: float = 0.1,
        max_pace: float = 3600.0,
        pace_from_headers: bool = True,
        max_server_pause: float | None = None,
    ) -> None:
        if not windows:
            raise ValueError("at least one window is required")
        if any(w.limit < 1 or w.seconds <= 0 for w in windows):
            raise ValueError("a window needs limit >= 1 and seconds > 0")
        self.windows = tuple(RateWindow(*w) for w in windows)
        self.store: RateLimitStore = store if store is not None else InMemoryRateLimitStore()
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._effective = tuple(RateWindow(w.limit, w.seconds + margin) for w in self.windows)
        self._low_water_fraction = low_water_fraction
        self._max_pace = max_pace
        self._pace_from_headers = pace_from_headers
        self.max_server_pause = max_server_pause
        self._longest = max(w.seconds for w in self._effective)
        self._lock = threading.Lock()
        self._not_before = -math.inf
        self._local: deque[float] = deque()  # this process's own requests, for header comparison
        self.total_waited = 0.0

    def __repr__(self) -> str:
        windows = ", ".join(f"{w.limit}/{w.seconds:g}s" for w in self.windows)
        return f"RateLimiter({windows}, store={type(self.store).__name__})"

    def try_acquire(self) -> float:
        """Take a slot now and return 0.0, or return how long to wait; never blocks."""
        now = self._clock()
        with self._lock:
            pace = self._not_before - now
        if pace > 0:
            return pace
        wait = self.store.try_acquire(now, self._effective)
        if wait <= 0:
            with self._lock:
                self._local.append(now)
                while self._local and self._local[0] <= now - self._longest:
                    self._local.popleft()
        return max(wait, 0.0)

    def acquire(self, timeout: float | None = None) -> float:
        """Block until a slot is taken; returns seconds waited.

        Raises RateLimitTimeoutError (taking no slot) if that would need more than ``timeout``.
        """
        waited = 0.0
        while True:
            with self._lock:
                pause = self._not_before - self._clock()
            if self.max_server_pause is not None and pause > self.max_server_pause:
                # The API itself says the key's budget is spent (429 Retry-After, or no
                # requests left until a far reset): another client is using it. Not ours to
                # wait out: the caller defers its work until the budget frees.
                raise RateLimitedError(
                    f"the API reports this key's request budget spent for {pause:.0f}s",
                    status=429,
                    code="KEY_BUDGET_SPENT",
                    retry_after=pause,
                )
            wait = self.try_acquire()
            if wait <= 0:
                if waited:
                    logger.debug("rate limiter waited %.2fs for a slot", waited)
                return waited
            if timeout is not None and waited + wait > timeout:
                raise RateLimitTimeoutError(
                    f"rate limit: next slot in {waited + wait:.1f}s exceeds {timeout:.1f}s",
                    wait=waited + wait,
                )
            self._sleep(wait)
            waited += wait
            self.total_waited += wait

    def observe(self, headers: Mapping[str, str], status: int | None = None) -> None:
        """Learn from a response's headers: 429 Retry-After and low X-RateLimit-Remaining."""
        h = {k.lower(): v for k, v in headers.items()}
        now = self._clock()
        pause = 0.0
        if status == 429:
            pause = parse_retry_after(h.get("retry-after")) or 0.0
        remaining = _int(h.get("x-ratelimit-remaining"))
        limit = _int(h.get("x-ratelimit-limit"))
        reset = _float(h.get("x-ratelimit-reset"))
        if self._pace_from_headers and remaining is not None and reset is not None:
            low_water = max(1, int((limit or 0) * self._low_water_fraction))
            local = self._local_remaining(limit, now)
            if remaining <= low_water and (local is None or remaining < local):
                until_reset = min(max(reset - self._wall_clock(), 0.0), self._max_pace)
                spacing = until_reset / (remaining + 1)
                if spacing > 0:
                    logger.debug(
                        "server reports %d requests left (limit %s); spacing %.2fs",
                        remaining, limit, spacing,
                    )
                pause = max(pause, spacing)
        if pause > 0:
            with self._lock:
                self._not_before = max(self._not_before, now + pause)

    def _local_remaining(self, limit: int | None, now: float) -> int | None:
        """How many requests this process believes are left in the window the server described."""
        matches = [w for w in self._effective if w.limit == limit]
        if not matches:
            return None
        with self._lock:
            return min(
                w.limit - sum(1 for t in self._local if t > now - w.seconds) for w in matches
            )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        result = float(value) if value is not None else None
    except ValueError:
        return None
    return result if result is not None and math.isfinite(result) else None
