"""Keeping a contact's lease while a run waits on it.

A run claims a contact (a lease in the state database) before writing it and releases it after.
Between the two it may wait a long time — for the hourly rate-limit window, for a 429's
Retry-After, for retry backoff — far longer than any lease one would dare to make. So the lease
is short, and the run renews it while it waits (the client sleeps through :meth:`sleep`) and
confirms it right before each request (:meth:`confirm`, the client's ``before_attempt``). A run
that finds it lost the lease — frozen, or cut off from the state database for longer than the
lease — sends nothing more for that contact: ``LeaseLost`` is raised instead, and the contact is
planned again next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from erzy_pipelines.state import LeaseLost, StateStore
from erzy_pipelines.sync.stop import StopSignal

DEFAULT_LEASE_SECONDS = 120.0


class LeaseKeeper:
    """Renews ``run_id``'s lease every third of its length while :attr:`holding` is set."""

    def __init__(
        self,
        store: StateStore,
        run_id: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        stop: StopSignal | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.run_id, self.lease_seconds = store, run_id, lease_seconds
        self.stop = stop or StopSignal()
        self._clock = clock
        self._renewed = clock()
        self.holding: str | None = None  # the phone whose lease the executor holds, if any

    @property
    def renew_every(self) -> float:
        return self.lease_seconds / 3

    def hold(self, phone: str) -> None:
        self.holding, self._renewed = phone, self._clock()

    def let_go(self) -> None:
        self.holding = None

    def confirm(self) -> None:
        """Renew the held contact's lease now; LeaseLost if this run no longer holds *that*
        contact's lease (holding another one proves nothing about it)."""
        if self.holding is None:
            return
        if self.store.renew(self.run_id, self.lease_seconds, phone=self.holding) == 0:
            self.holding = None
            raise LeaseLost(f"run {self.run_id} lost its contact lease while it waited")
        self._renewed = self._clock()

    def sleep(self, seconds: float) -> None:
        """Sleep like ``time.sleep`` (a stop ends it early), renewing the lease as it goes."""
        deadline = self._clock() + max(0.0, seconds)
        while (left := deadline - self._clock()) > 0:
            self.stop.sleep(min(left, self.renew_every))
            if self.holding and self._clock() - self._renewed >= self.renew_every:
                self.confirm()
