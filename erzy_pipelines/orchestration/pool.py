"""The ``erzycall_api`` pool: one sync at a time sends through a Dagster instance.

The slot is claimed by the sync itself, right before its first request, instead of by Dagster's
executor before the step starts. That way runs extract, normalize and plan side by side and only
take turns to send; a dry run never waits; and the wait is ours to make visible and safe. While
it waits, the sync says once which run holds the slot and since when, sleeps (no busy loop),
stops within a second when asked to, and frees a slot whose holder has ended or whose process is
gone — so a killed run never blocks the ones after it.

The pool's size comes from the instance (``concurrency.pools.default_limit`` in dagster.yaml, or
the UI's Deployment → Concurrency page). Without a limit the sync does not wait.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from erzy_pipelines.orchestration.dead_runs import free_if_done
from erzy_pipelines.sync.stop import StopSignal

POOL = "erzycall_api"
POLL_SECONDS = 2.0


def _since(moment: dt.datetime | None) -> str:
    if moment is None:
        return "an unknown time"
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    age = int((dt.datetime.now(dt.UTC) - moment).total_seconds())
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({max(age, 0)} s ago)"


class PoolSlot:
    """Claims one slot of ``pool`` for ``run_id`` on entering :meth:`held`, frees it on exit."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        step_key: str,
        *,
        stop: StopSignal,
        log: Callable[[str], None],
        pool: str = POOL,
    ) -> None:
        self.instance, self.run_id, self.step_key = instance, run_id, step_key
        self.stop, self.log, self.pool = stop, log, pool
        self._storage = instance.event_log_storage

    def _limited(self) -> bool:
        if not self._storage.supports_global_concurrency_limits:
            return False
        info = self._storage.get_concurrency_info(self.pool)
        if info.limit is None:
            return False
        if info.using_default_limit and info.slot_count != info.limit:
            self._storage.initialize_concurrency_limit_to_default(self.pool)
        return True

    def _holders(self) -> list[tuple[str, dt.datetime | None]]:
        info = self._storage.get_concurrency_info(self.pool)
        since = {p.run_id: p.assigned_timestamp for p in info.pending_steps if p.assigned_timestamp}
        others = [s.run_id for s in info.claimed_slots if s.run_id != self.run_id]
        return [(run_id, since.get(run_id)) for run_id in others]

    def _describe(self, run_id: str) -> str:
        run = self.instance.get_run_by_id(run_id)
        if run is None:
            return f"run {run_id}"
        scope = run.tags.get("dagster/partition") or (
            "all groups" if run.tags.get("dagster/asset_partition_range_start") else ""
        )
        return f"run {run_id} ({run.job_name}{', ' + scope if scope else ''}, {run.status.value})"

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self._limited():
            yield
            return
        announced: set[str] = set()
        try:
            while not self._storage.claim_concurrency_slot(
                self.pool, self.run_id, self.step_key, 0
            ).is_claimed:
                freed = False
                for holder, since in self._holders():
                    reason = free_if_done(self.instance, holder)
                    if reason is not None:
                        self.log(f"Freed the {self.pool} slot held by {reason}.")
                        freed = True
                    elif holder not in announced:
                        announced.add(holder)
                        self.log(
                            f"Waiting for the {self.pool} pool: {self._describe(holder)} holds "
                            f"its slot since {_since(since)}. Sending starts when it is freed."
                        )
                if not freed:
                    self.stop.sleep(POLL_SECONDS)
            if announced:
                self.log(f"Got the {self.pool} slot; sending.")
            yield
        finally:
            self._storage.free_concurrency_slot_for_step(self.run_id, self.step_key)
