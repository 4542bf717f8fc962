"""Stopping a sync on request: SIGTERM, Ctrl-C, or the Dagster run being canceled.

A stop is cooperative: a signal only raises a flag, and the sync looks at it where stopping is
safe — between CRM chunks, between operations, and in every wait (the pool slot, the rate
limiter, retry backoff), which sleep in short slices so a stop is seen within a second. The
request in flight is finished (or, if the stop comes while it waits for its turn, left as a
committed intent that the next run retries with the same idempotency key). A second signal
stops at once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SLICE_SECONDS = 0.25


class SyncStopped(Exception):
    """A stop was requested; the message says by what."""


class StopSignal:
    """A stop flag, set by a signal handler or found by polling ``canceled``.

    ``canceled`` (e.g. "is the Dagster run being canceled?") is asked at most every
    ``poll_seconds``, so checking the flag often stays cheap.
    """

    def __init__(
        self,
        canceled: Callable[[], bool] | None = None,
        *,
        poll_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._canceled = canceled
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._sleep = sleep
        self._last_poll = float("-inf")
        self.reason: str | None = None
        self.signum: int | None = None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def requested(self) -> bool:
        if self.reason is None and self._canceled is not None:
            now = self._clock()
            if now - self._last_poll >= self._poll_seconds:
                self._last_poll = now
                if self._canceled():
                    self.request("the run was canceled")
        return self.reason is not None

    def check(self) -> None:
        """Raise :class:`SyncStopped` if a stop was requested."""
        if self.requested():
            raise SyncStopped(f"stopped: {self.reason}")

    def sleep(self, seconds: float) -> None:
        """Sleep like ``time.sleep``, but give up (raise SyncStopped) as soon as a stop comes."""
        deadline = self._clock() + max(0.0, seconds)
        while True:
            self.check()
            left = deadline - self._clock()
            if left <= 0:
                return
            self._sleep(min(SLICE_SECONDS, left))

    @contextmanager
    def on_signals(self) -> Iterator[None]:
        """SIGINT and SIGTERM request a stop while inside; a second one interrupts at once.

        Only the main thread can own signal handlers; elsewhere this does nothing (the run's
        cancel status is still polled).
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        names = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}

        def handler(signum: int, _frame: object) -> None:
            if self.reason is not None:
                raise KeyboardInterrupt
            self.signum = signum
            self.request(names.get(signum, f"signal {signum}"))

        previous = {s: signal.signal(s, handler) for s in names}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

