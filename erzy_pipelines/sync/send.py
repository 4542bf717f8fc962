"""Carry out a sync plan against the Contacts API, committing every outcome as soon as it is known.

No Dagster here: the sync asset and the tests call :func:`execute_plan` with a client and a state
store bound to the run's account. The order of steps for each operation is what makes crashes,
retries and concurrent runs safe:

1. claim the phone in the state database (a short lease, renewed while the run waits and
   confirmed before every request — see ``leases.py``; a phone held by another run is deferred);
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
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from erzy_pipelines.core.ownership import REPLACE, Ownership
from erzy_pipelines.core.payload import create_body, idempotency_key, payload_hash, scoped_key
from erzy_pipelines.core.plan import Action, ContactState, Operation, Plan, plan_contact
from erzy_pipelines.erzycall import errors
from erzy_pipelines.erzycall.client import ErzyCallClient
from erzy_pipelines.erzycall.models import Contact as RemoteContact
from erzy_pipelines.state import AUDIT_FIELDS, LeaseLost
from erzy_pipelines.sync.leases import LeaseKeeper
from erzy_pipelines.sync.stop import StopSignal, SyncStopped

#: Outcomes an operation can end in; the audit's ``outcome`` column uses exactly these.
OUTCOMES = (
    "created",
    "updated",
    "adopted",
    "recreated",
    "deleted",
    "unchanged",
    "deferred",
    "failed",
    "planned",
)


@dataclass(frozen=True)
class Budget:
    """The most a run may spend. ``None`` means no cap besides the rate limiter."""

    max_requests: int | None = None
    max_seconds: float | None = None


@dataclass(slots=True)
class OperationResult:
    """One audit row's worth of what happened to one planned operation."""

    phone: str
    crm_ids: tuple[str, ...]
    action: str
    outcome: str
    attempts: int = 0
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    remote_id: str | None = None
    payload_hash: str | None = None
    unavailable: bool = False  # failed for want of the API (network, 5xx), every retry spent
    not_found: bool = False  # met a 404 and did not end in a success

    @classmethod
    def of(cls, op: Operation, outcome: str, **fields: Any) -> OperationResult:
        """The result row of a planned operation; ``fields`` add status, error, attempts..."""
        row = cls(
            op.contact.phone,
            tuple(op.contact.crm_ids),
            op.action.value,
            outcome,
            remote_id=op.remote_id,
            payload_hash=op.payload_hash,
        )
        for name, value in fields.items():
            setattr(row, name, value)
        return row

    def audit_values(self, run_id: str, partition_key: str) -> tuple[Any, ...]:
        """This result as an audit row: ``StateStore.AUDIT_FIELDS`` order, created now."""
        return (
            run_id, partition_key, ",".join(self.crm_ids), self.phone, self.action, self.outcome,
            self.http_status, self.error_code, self.error_message, self.attempts, self.remote_id,
            self.payload_hash, None,
        )

    def audit_row(self, run_id: str, partition_key: str) -> dict[str, Any]:
        """The audit row by column name (for previews in the run's metadata)."""
        return dict(zip(AUDIT_FIELDS, self.audit_values(run_id, partition_key), strict=True))


def audit(store: Any, results: Iterable[OperationResult], run_id: str, partition_key: str) -> None:
    """Write these results' audit rows in one transaction."""
    store.add_audit_values([r.audit_values(run_id, partition_key) for r in results])


@dataclass
class SyncReport:
    """What a run did: per-operation results, counts by outcome and requests spent."""

    results: list[OperationResult] = field(default_factory=list)
    requests: int = 0
    aborted: str | None = None
    api_unavailable: bool = False  # aborted because the API stopped answering, not for the key
    misconfigured: bool = False  # aborted after 404s in a row: wrong URL, proxy, other org
    stopped: str | None = None  # a stop was requested (SIGTERM, Ctrl-C, run canceled): why
    budget_frees_at: float | None = None  # the key's budget was spent (429): when it frees
    removal_refused: str | None = None  # the opt-in removal's guards stopped it: why

    @property
    def counts(self) -> Counter[str]:
        return Counter(r.outcome for r in self.results)


#: Operations in a row that fail for want of the API (no connection, timeouts, 5xx) before the
#: run stops. Each one has already spent every retry, so three in a row means the API is down:
#: trying the rest would cost minutes of backoff (and rate budget) per contact for nothing.
UNAVAILABLE_AFTER = 3
#: Operations in a row that meet a 404 without a success between before the run stops: a real
#: deletion in ErzyCall is recreated (a success); a run of 404s means the URL or key is wrong.
NOT_FOUND_AFTER = 3

ProgressCallback = Callable[[int, int, int], None]
"""Called as ``(operations_done, operations_total, requests_spent)``."""


class BudgetSpent(Exception):
    """The API answered 429 for longer than the client would wait: the key's budget is spent."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"the key's request budget is spent (retry after {retry_after} s)")
        self.retry_after = retry_after


def remote_payload(remote: RemoteContact) -> dict[str, Any]:
    """The remote contact in the same shape as ``core.payload.to_payload``, to diff against."""
    return {**remote.as_payload(), "groupIds": sorted(remote.group_ids)}


class _Executor:
    def __init__(
        self,
        client: ErzyCallClient,
        store: Any,
        run_id: str,
        ownership: Ownership,
        read_started: float | None = None,
    ):
        self.client, self.store, self.run_id = client, store, run_id
        self.ownership = ownership
        self.read_started = read_started  # when this run's CRM read began (epoch seconds)

    def _key(self, action: str, phone: str, seq: int, body_hash: str) -> str:
        return scoped_key(idempotency_key(action, phone, seq, body_hash), self.store.account)

    # Each method returns the finished OperationResult; state is committed inside.
    def run(self, op: Operation) -> OperationResult:
        phone = op.contact.phone
        # Keys go out unique to this state's account (``core/payload.py``, ``scoped_key``).
        op = replace(op, idempotency_key=scoped_key(op.idempotency_key, self.store.account))
        result = OperationResult.of(op, "failed")
        try:
            self.store.begin_intent(
                phone, self.run_id, op.intent_seq, op.payload_hash, op.idempotency_key
            )
        except LeaseLost:
            result.outcome, result.error_code = "deferred", "claimed_by_another_run"
            return result
        before = self.client.requests_sent
        try:
            if op.action == Action.CREATE:
                self._create(op, result)
            elif op.action == Action.DELETE:
                self._delete(op, result)
            else:
                self._update(op, result)
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

    def _create(self, op: Operation, result: OperationResult, outcome: str = "created") -> None:
        try:
            remote = self.client.create_contact(create_body(op.payload), op.idempotency_key)
        except errors.ConflictError:
            self._adopt(op, result)
            return
        result.http_status = 201
        self._succeeded(op, result, remote.id, created=True, outcome=outcome)

    def _delete(self, op: Operation, result: OperationResult) -> None:
        """Remove a contact the sync created (opt-in): gone already (by hand, or our own
        earlier attempt whose answer was lost) is as good as deleted."""
        assert op.remote_id is not None
        try:
            self.client.delete_contact(op.remote_id, op.idempotency_key)
            result.http_status = 204
        except errors.NotFoundError as exc:
            if not exc.from_the_api:
                raise
            result.http_status = 404
        self.store.record_deleted(op.contact.phone, self.run_id)
        result.outcome = "deleted"

    def _adopt(self, op: Operation, result: OperationResult) -> None:
        existing = self.client.find_contact_by_phone(op.contact.phone)
        if existing is None:
            raise errors.ConflictError(
                "create answered 409 CONFLICT but no contact with this exact phone was found",
                status=409,
                code="CONFLICT_UNRESOLVED",
            )
        diff = self.ownership.adoption(op.payload, remote_payload(existing))
        result.http_status = 200
        if diff:
            # The diff depends on what ErzyCall holds right now, so the key hashes the diff:
            # the same key must never carry two different bodies.
            key = self._key("adopt", op.contact.phone, op.intent_seq, payload_hash(diff))
            self.client.update_contact(existing.id, diff, key)
        self._succeeded(op, result, existing.id, created=False, outcome="adopted")

    def _update(self, op: Operation, result: OperationResult) -> None:
        assert op.remote_id is not None
        phone = op.contact.phone
        try:
            body, key = op.body, op.idempotency_key
            if self.ownership.needs_current(body):
                # Read right before the PATCH, also in a reconcile: its listing may be hours
                # old, and an agent's tag added since must survive the list being replaced.
                current = remote_payload(self.client.get_contact(op.remote_id))
                body = self.ownership.merged(body, op.payload, op.last_sent, current)
                if body != op.body:  # it depends on ErzyCall's values: the key hashes it
                    key = self._key("update", phone, op.intent_seq, payload_hash(body))
            if body:
                self.client.update_contact(op.remote_id, body, key)
        except errors.NotFoundError as exc:
            if not exc.from_the_api:
                raise
            # Deleted in ErzyCall: create it again, with a key of its own so the recreate can
            # never replay an old create of this phone. The old id stays until the new one is
            # recorded.
            result.not_found = True
            key = self._key("recreate", phone, op.intent_seq, op.payload_hash)
            recreate = replace(op, action=Action.CREATE, idempotency_key=key)
            self._create(recreate, result, outcome="recreated")
            return
        result.http_status = 200 if body else None
        self._succeeded(op, result, op.remote_id, created=False, outcome="updated")

    def _succeeded(
        self, op: Operation, result: OperationResult, remote_id: str, *, created: bool, outcome: str
    ) -> None:
        self.store.record_success(
            op.contact.phone,
            self.run_id,
            remote_id=remote_id,
            payload=op.payload,
            payload_hash=op.payload_hash,
            crm_ids=list(op.contact.crm_ids),
            created=created,
            outcome=outcome,
            source_fp=op.source_fp,
            source_read_at=self.read_started,
        )
        result.outcome = outcome
        result.remote_id = remote_id
        result.not_found = False

    def _failed(
        self,
        op: Operation,
        result: OperationResult,
        exc: errors.ErzyCallError,
        *,
        permanent: bool,
        new_intent: bool = False,
    ) -> None:
        result.outcome = "failed"
        result.http_status = exc.status
        result.error_code = exc.code or type(exc).__name__
        result.error_message = str(exc)
        try:
            self.store.record_failure(
                op.contact.phone,
                self.run_id,
                outcome="failed",
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
        result.outcome, result.error_code = "deferred", "lease_lost"
        result.error_message = f"{exc}; the contact is planned again next run"


def _deferred(ops: Iterable[Operation], reason: str) -> list[OperationResult]:
    return [OperationResult.of(op, "deferred", error_code=reason) for op in ops]


def _checked_under_lease(
    store: Any,
    op: Operation,
    ownership: Ownership,
    reconciled: bool,
    read_started: float | None = None,
) -> Operation | None:
    """The operation to send now that this run holds the contact's lease, or None (nothing to
    send). A write from a CRM read older than the one ErzyCall's value came from is never sent
    (another run read the CRM later and confirmed a newer value). Otherwise a write planned from
    a full listing stands as it is; anything else is planned again (and a deletion checked)."""
    current = store.load_states([op.contact.phone]).get(op.contact.phone)
    if (
        read_started is not None
        and current is not None
        and current.source_read_at is not None
        and read_started < current.source_read_at
    ):
        return None
    if reconciled and op.action is not Action.DELETE:
        return op
    return _replan_under_lease(current, op, ownership)


def _replan_under_lease(
    current: ContactState | None, op: Operation, ownership: Ownership
) -> Operation | None:
    """Plan the contact again against its state (``current``) as it is now that this run holds
    its lease.

    Concurrent runs (a group backfill next to the daily sync) plan from the same state. Another
    run may have sent this contact since: the fresh plan sends only what is still missing,
    diffed against what was really sent last, under a key of its own — or nothing (``None``).
    """
    if op.action is Action.DELETE:  # still the contact, as it was, this run planned to remove?
        unchanged = current is not None and (current.remote_id, current.last_payload) == (
            op.remote_id,
            op.last_sent,
        )
        return op if unchanged else None
    fresh = plan_contact(op.contact, current, ownership, source_fp=op.source_fp)
    if fresh is None or fresh.action is Action.SKIP_REJECTED:
        return None
    return fresh


def _unchanged(op: Operation) -> OperationResult:
    return OperationResult.of(op, "unchanged", error_code="done_by_another_run")


def planned_results(plan: Plan) -> list[OperationResult]:
    """Audit rows for a dry run: every operation the plan would send, nothing sent."""
    return [OperationResult.of(op, "planned", attempts=op.requests) for op in plan.operations]


def execute_plan(
    plan: Plan,
    *,
    client: ErzyCallClient,
    store: Any,
    run_id: str,
    partition_key: str,
    budget: Budget = Budget(),
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
    report = SyncReport()
    left_over: list[OperationResult] = []
    executor = _Executor(client, store, run_id, ownership, read_started)
    ops: Sequence[Operation] = plan.operations
    started, start_requests = clock(), client.requests_sent
    unavailable_streak = not_found_streak = 0
    for index, op in enumerate(ops):
        spent = client.requests_sent - start_requests
        if budget.max_requests is not None and spent + op.requests > budget.max_requests:
            left_over = _deferred(ops[index:], "request_budget")
            break
        if budget.max_seconds is not None and clock() - started >= budget.max_seconds:
            left_over = _deferred(ops[index:], "time_budget")
            break
        if stop.requested():
            left_over = _deferred(ops[index:], "run_stopped")
            report.stopped = stop.reason
            break
        if not store.claim(op.contact.phone, run_id, keeper.lease_seconds):
            result = _deferred([op], "claimed_by_another_run")[0]
        elif (
            fresh := _checked_under_lease(store, op, ownership, reconciled, read_started)
        ) is None:
            store.release(op.contact.phone, run_id)
            result = _unchanged(op)
        else:
            op = fresh
            keeper.hold(op.contact.phone)
            try:
                result = executor.run(op)
            except SyncStopped:
                # Stopped while waiting for the limiter or a retry: the intent stays committed,
                # so the next run sends it with the same idempotency key.
                left_over = _deferred(ops[index:], "run_stopped")
                report.stopped = stop.reason
                break
            except BudgetSpent as exc:
                left_over = _deferred(ops[index:], "key_budget_spent")
                report.budget_frees_at = time.time() + (exc.retry_after or 0.0)
                break
            except (errors.AuthenticationError, errors.PermissionDeniedError) as exc:
                failed = OperationResult.of(
                    op,
                    "failed",
                    http_status=exc.status,
                    error_code=exc.code,
                    error_message=str(exc),
                    attempts=exc.attempts,
                )
                rest = _deferred(ops[index + 1 :], "run_aborted")
                report.results += [failed, *rest]
                audit(store, [failed, *rest], run_id, partition_key)
                store.record_deferred([r.phone for r in rest], run_id)
                report.aborted = f"{exc.status} {exc.code}: {exc}"
                break
            finally:
                keeper.let_go()
                store.release(op.contact.phone, run_id)
        report.results.append(result)
        audit(store, [result], run_id, partition_key)
        if on_progress is not None:
            on_progress(index + 1, len(ops), client.requests_sent - start_requests)
        unavailable_streak = unavailable_streak + 1 if result.unavailable else 0
        not_found_streak = not_found_streak + 1 if result.not_found else 0
        more = index + 1 < len(ops)
        if unavailable_streak >= UNAVAILABLE_AFTER and more:
            left_over = _deferred(ops[index + 1 :], "api_unavailable")
            report.aborted = (
                f"{unavailable_streak} operations in a row failed after every retry; "
                f"last: {result.error_message}"
            )
            report.api_unavailable = True
            break
        if not_found_streak >= NOT_FOUND_AFTER and more:
            left_over = _deferred(ops[index + 1 :], "misconfiguration_suspected")
            report.aborted = (
                f"{not_found_streak} operations in a row were answered 404 with no success "
                f"between; last: {result.error_message or 'recreated'}"
            )
            report.misconfigured = True
            break
    if left_over:
        report.results += left_over
        audit(store, left_over, run_id, partition_key)
        store.record_deferred([r.phone for r in left_over], run_id)
    report.requests = client.requests_sent - start_requests
    return report
