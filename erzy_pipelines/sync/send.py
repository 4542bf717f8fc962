"""Carry out a sync plan against the Contacts API, committing every outcome as soon as it is known.

No Dagster here: the sync asset and the tests call :func:`execute_plan` with a client and a state
store bound to the run's account. The order of steps for each operation is what makes crashes,
retries and concurrent runs safe:

1. claim the phone in the state database (a short lease, renewed while the run waits and
   confirmed before every request — see ``lease_keeper.py``; a phone held by another run is
   deferred);
2. commit the intent (sequence number, payload hash, idempotency key) *before* the request, so a
   crash after the request leaves a pending intent that the next run retries with the same key;
3. send; the client retries transient failures with the same key;
4. commit the outcome and an audit row, then release the lease.

Every state write of steps 2 and 4 is fenced: it only happens while the run still holds the
lease. A run that lost it sends nothing more for that contact; if a request had already gone
out, the contact is left *in doubt*, so the next plan sends every field under a new key.

How each answer is resolved:

- ``409 CONFLICT`` on create: the phone already exists (created by hand, by an earlier sync whose
  idempotency key expired, or by a concurrent run). Exact-phone lookup, adopt its id, PATCH only
  what the sync owns and differs (none → no request; see ``core/ownership.py``).
- ``404`` with the API's ``NOT_FOUND`` envelope on PATCH (or on the read before it): deleted in
  ErzyCall. Created again; the old id is kept until the new one is recorded. A 404 without that
  envelope (a proxy's page, a wrong base path) is a failure. ``NOT_FOUND_AFTER`` operations in a
  row that meet 404s without a success between stop the run as a likely misconfiguration;
  nothing is forgotten.
- ``400``/``422``: the API rejects this payload. Failed, with the API's error recorded; the hash
  is remembered so the same payload is not sent again until the contact changes.
- ``409 IDEMPOTENCY_MISMATCH``: the key was used with another body. Failed; the contact is left in
  doubt so the next run sends every field under a new key.
- ``429`` that outlasts the client's retries: the key's budget is spent (by this run or another
  client). Not an outage: this and the remaining operations are deferred, and the report says
  when the budget frees (``report.budget_frees_at``).
- ``5xx``/transport errors that survive the client's retries: failed, retried next run with the
  same idempotency key. ``UNAVAILABLE_AFTER`` such failures in a row mean the API is down: the run
  stops (``report.api_unavailable``) and what was not tried is deferred.
- ``401``/``403``: the key cannot work for anyone. Stop the run at once; operations not yet
  tried are recorded as deferred so they go first next time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from erzy_pipelines.core.outcomes import Outcome
from erzy_pipelines.core.ownership import REPLACE, Ownership
from erzy_pipelines.core.payload import scoped_key
from erzy_pipelines.core.plan import Action, Operation, Plan
from erzy_pipelines.erzycall import errors
from erzy_pipelines.erzycall.client import ErzyCallClient
from erzy_pipelines.state import LeaseLost
from erzy_pipelines.sync.contact_writer import ContactWriter, remote_payload
from erzy_pipelines.sync.lease_check import checked_under_lease as _checked_under_lease
from erzy_pipelines.sync.lease_keeper import LeaseKeeper
from erzy_pipelines.sync.report import (
    Budget,
    OperationResult,
    ProgressCallback,
    SyncReport,
    audit,
    deferred,
    done_by_another_run,
    planned_results,
)
from erzy_pipelines.sync.stop import StopSignal, SyncStopped

# What other modules import from here (most now live in ``report.py`` and ``contact_writer.py``).
__all__ = [
    "NOT_FOUND_AFTER",
    "UNAVAILABLE_AFTER",
    "Budget",
    "BudgetSpent",
    "OperationResult",
    "ProgressCallback",
    "SyncReport",
    "audit",
    "execute_plan",
    "planned_results",
    "remote_payload",
]

#: Operations in a row that fail for want of the API (no connection, timeouts, 5xx) before the
#: run stops. Each one has already spent every retry, so three in a row means the API is down:
#: trying the rest would cost minutes of backoff (and rate budget) per contact for nothing.
UNAVAILABLE_AFTER = 3
#: Operations in a row that meet a 404 without a success between before the run stops: a real
#: deletion in ErzyCall is recreated (a success); a run of 404s means the URL or key is wrong.
NOT_FOUND_AFTER = 3


class BudgetSpent(Exception):
    """The API answered 429 for longer than the client would wait: the key's budget is spent."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"the key's request budget is spent (retry after {retry_after} s)")
        self.retry_after = retry_after


class _Executor:
    """One operation, start to finish: its intent committed, its requests made (by the
    :class:`ContactWriter`), and the answer resolved into its outcome (see the module's list)."""

    def __init__(self, writer: ContactWriter):
        self.writer = writer
        self.client, self.store, self.run_id = writer.client, writer.store, writer.run_id

    # Returns the finished OperationResult; state is committed inside.
    def run(self, op: Operation) -> OperationResult:
        phone = op.contact.phone
        # Keys go out unique to this state's account (``core/payload.py``, ``scoped_key``).
        op = replace(op, idempotency_key=scoped_key(op.idempotency_key, self.store.account))
        result = OperationResult.of(op, Outcome.FAILED)
        try:
            self.store.begin_intent(
                phone, self.run_id, op.intent_seq, op.payload_hash, op.idempotency_key
            )
        except LeaseLost:
            result.outcome, result.error_code = Outcome.DEFERRED, "claimed_by_another_run"
            return result
        before = self.client.requests_sent
        try:
            if op.action == Action.CREATE:
                self.writer.create(op, result)
            elif op.action == Action.DELETE:
                self.writer.delete(op, result)
            else:
                self.writer.update(op, result)
        except LeaseLost as exc:
            self._lease_lost(op, result, exc, sent=self.client.requests_sent > before)
        except errors.RateLimitedError as exc:
            raise BudgetSpent(exc.retry_after) from exc  # the intent stays pending, unsent
        except (errors.ValidationError, errors.UnprocessableError) as exc:
            self._failed(op, result, exc, permanent=True)
        except errors.IdempotencyMismatchError as exc:
            self._failed(op, result, exc, permanent=False, new_intent=True)
        except (errors.AuthenticationError, errors.PermissionDeniedError) as exc:
            self._failed(op, result, exc, permanent=False)
            raise
        except errors.NotFoundError as exc:
            self._failed(op, result, exc, permanent=False)
            result.not_found = True
        except errors.ErzyCallError as exc:
            self._failed(op, result, exc, permanent=False)
            result.unavailable = exc.retryable
        finally:
            result.attempts = self.client.requests_sent - before
        return result

    def _failed(
        self,
        op: Operation,
        result: OperationResult,
        exc: errors.ErzyCallError,
        *,
        permanent: bool,
        new_intent: bool = False,
    ) -> None:
        result.outcome = Outcome.FAILED
        result.http_status = exc.status
        result.error_code = exc.code or type(exc).__name__
        result.error_message = str(exc)
        try:
            self.store.record_failure(
                op.contact.phone,
                self.run_id,
                outcome=Outcome.FAILED,
                error_code=result.error_code,
                error_message=result.error_message,
                payload_hash=op.payload_hash,
                permanent=permanent,
                new_intent=new_intent,
            )
        except LeaseLost as lost:
            self._lease_lost(op, result, lost, sent=True)

    def _lease_lost(
        self, op: Operation, result: OperationResult, exc: LeaseLost, *, sent: bool
    ) -> None:
        """Another run took the contact over: write nothing more for it. If a request went out,
        its effect is unknown to the state: leave the contact in doubt for the next plan."""
        if sent:
            self.store.mark_in_doubt(op.contact.phone, self.run_id, op.idempotency_key)
        result.outcome, result.error_code = Outcome.DEFERRED, "lease_lost"
        result.error_message = f"{exc}; the contact is planned again next run"


def _limit_reached(
    op: Operation, budget: Budget, spent: int, clock: Callable[[], float], started: float
) -> str | None:
    """Why ``op`` may not be sent under the run's budget (the deferral's reason), or None. The
    clock is read only when there is a time cap."""
    if budget.max_requests is not None and spent + op.requests > budget.max_requests:
        return "request_budget"
    if budget.max_seconds is not None and clock() - started >= budget.max_seconds:
        return "time_budget"
    return None


@dataclass(eq=False)
class _PlanRun:
    """One :func:`execute_plan` call: what it sends with, what it did, and what it leaves for
    the next run (``left_over``, deferred when the loop ends early)."""

    ops: Sequence[Operation]
    store: Any
    run_id: str
    partition_key: str
    stop: StopSignal
    keeper: LeaseKeeper
    executor: _Executor
    ownership: Ownership
    reconciled: bool
    read_started: float | None
    report: SyncReport = field(default_factory=SyncReport)
    left_over: list[OperationResult] = field(default_factory=list)
    unavailable_streak: int = 0
    not_found_streak: int = 0

    def defer_from(self, index: int, reason: str) -> None:
        """The operations from ``index`` on are not tried this run."""
        self.left_over = deferred(self.ops[index:], reason)

    def stopped_at(self, index: int) -> None:
        """A stop was requested: what is left (from ``index``) goes first next run."""
        self.defer_from(index, "run_stopped")
        self.report.stopped = self.stop.reason

    def attempt(self, index: int) -> OperationResult | None:
        """Claim the operation at ``index``, check it under the lease and send what is left of
        it. Its result, or None when the run ends at it (stopped, out of key budget, refused)."""
        op, store, run_id = self.ops[index], self.store, self.run_id
        if not store.claim(op.contact.phone, run_id, self.keeper.lease_seconds):
            return deferred([op], "claimed_by_another_run")[0]
        fresh = _checked_under_lease(store, op, self.ownership, self.reconciled, self.read_started)
        if fresh is None:
            store.release(op.contact.phone, run_id)
            return done_by_another_run(op)
        op = fresh
        self.keeper.hold(op.contact.phone)
        try:
            return self.executor.run(op)
        except SyncStopped:
            # Stopped while waiting for the limiter or a retry: the intent stays committed,
            # so the next run sends it with the same idempotency key.
            self.stopped_at(index)
        except BudgetSpent as exc:
            self.defer_from(index, "key_budget_spent")
            self.report.budget_frees_at = time.time() + (exc.retry_after or 0.0)
        except (errors.AuthenticationError, errors.PermissionDeniedError) as exc:
            self.refused(op, exc, index + 1)
        finally:
            self.keeper.let_go()
            store.release(op.contact.phone, run_id)
        return None

    def refused(self, op: Operation, exc: errors.ErzyCallError, rest_from: int) -> None:
        """401/403: the key works for no one. ``op`` failed and the rest are deferred
        (``run_aborted``), committed at once, before the contact's lease is released."""
        failed = OperationResult.of(
            op,
            Outcome.FAILED,
            http_status=exc.status,
            error_code=exc.code,
            error_message=str(exc),
            attempts=exc.attempts,
        )
        rest = deferred(self.ops[rest_from:], "run_aborted")
        self.report.results += [failed, *rest]
        audit(self.store, [failed, *rest], self.run_id, self.partition_key)
        self.store.record_deferred([r.phone for r in rest], self.run_id)
        self.report.aborted = f"{exc.status} {exc.code}: {exc}"

    def record(self, result: OperationResult) -> None:
        """Keep the result and commit its audit row."""
        self.report.results.append(result)
        audit(self.store, [result], self.run_id, self.partition_key)

    def gives_up_after(self, index: int, result: OperationResult) -> bool:
        """Count ``result`` into the streaks. True (the rest deferred, the run aborted) when
        operations are left and a streak says the API is down or the setup is wrong."""
        self.unavailable_streak = self.unavailable_streak + 1 if result.unavailable else 0
        self.not_found_streak = self.not_found_streak + 1 if result.not_found else 0
        more = index + 1 < len(self.ops)
        if self.unavailable_streak >= UNAVAILABLE_AFTER and more:
            self.defer_from(index + 1, "api_unavailable")
            self.report.aborted = (
                f"{self.unavailable_streak} operations in a row failed after every retry; "
                f"last: {result.error_message}"
            )
            self.report.api_unavailable = True
            return True
        if self.not_found_streak >= NOT_FOUND_AFTER and more:
            self.defer_from(index + 1, "misconfiguration_suspected")
            self.report.aborted = (
                f"{self.not_found_streak} operations in a row were answered 404 with no success "
                f"between; last: {result.error_message or 'recreated'}"
            )
            self.report.misconfigured = True
            return True
        return False

    def close(self) -> None:
        """Commit the deferral of what the loop left untried."""
        if self.left_over:
            self.report.results += self.left_over
            audit(self.store, self.left_over, self.run_id, self.partition_key)
            self.store.record_deferred([r.phone for r in self.left_over], self.run_id)


def execute_plan(
    plan: Plan,
    *,
    client: ErzyCallClient,
    store: Any,
    run_id: str,
    partition_key: str,
    budget: Budget = Budget(),  # noqa: B008 (frozen: one shared default is safe)
    clock: Callable[[], float] = time.monotonic,
    on_progress: ProgressCallback | None = None,
    reconciled: bool = False,
    stop: StopSignal | None = None,
    keeper: LeaseKeeper | None = None,
    ownership: Ownership = REPLACE,
    read_started: float | None = None,
) -> SyncReport:
    """Send the plan's operations in order until done, out of budget, stopped or aborted.

    ``reconciled``: the plan was made against what ErzyCall holds (a full resync's listing), so
    it is sent as planned instead of being re-planned against the stored state under each lease;
    a PATCH that replaces a list still reads the contact right before it.

    Every operation's audit row is committed right after its outcome; the report is returned
    even when the run aborts (``report.aborted`` holds the reason; nothing is raised here, so
    the caller can record the run before failing it).

    ``stop`` is looked at before each operation and in every wait (the client sleeps through
    it, via ``keeper``): the operation in flight is finished, or — stopped while waiting for its
    turn — left as a committed intent that the next run retries with the same key. What was not
    done is deferred (``run_stopped``) and goes first next run; ``report.stopped`` says why.

    ``read_started`` (epoch seconds): when the CRM read the plan came from began; stored with
    every confirmed write, and no contact is sent whose value came from a later read.
    """
    stop = stop or StopSignal()
    keeper = keeper or LeaseKeeper(store, run_id, stop=stop)
    ops: Sequence[Operation] = plan.operations
    run = _PlanRun(
        ops, store, run_id, partition_key, stop, keeper,
        _Executor(ContactWriter(client, store, run_id, ownership, read_started)),
        ownership, reconciled, read_started,
    )
    started, start_requests = clock(), client.requests_sent
    for index, op in enumerate(ops):
        reason = _limit_reached(op, budget, client.requests_sent - start_requests, clock, started)
        if reason is not None:
            run.defer_from(index, reason)
            break
        if stop.requested():
            run.stopped_at(index)
            break
        result = run.attempt(index)
        if result is None:  # the run ended at this operation
            break
        run.record(result)
        if on_progress is not None:
            on_progress(index + 1, len(ops), client.requests_sent - start_requests)
        if run.gives_up_after(index, result):
            break
    run.close()
    run.report.requests = client.requests_sent - start_requests
    return run.report
