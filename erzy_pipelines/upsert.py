"""Carry out a sync plan against the Contacts API, committing every outcome as soon as it is known.

No Dagster here: the ``erzycall_contacts`` asset and the tests call :func:`execute_plan` with a
client and a state store. The order of steps for each operation is what makes crashes and
retries safe:

1. claim the phone in the state database (a lease, so two concurrent runs never write the same
   contact at once; a phone held by another run is deferred, not skipped);
2. commit the intent (sequence number, payload hash, idempotency key) *before* the request, so a
   crash after the request leaves a pending intent that the next run retries with the same key;
3. send; the client retries transient failures with the same key;
4. commit the outcome and an audit row, then release the lease.

How each answer is resolved:

- ``409 CONFLICT`` on create: the phone already exists (created by hand, by an earlier sync whose
  idempotency key expired, or by a concurrent run). Exact-phone lookup, adopt its id, PATCH only
  the fields that differ (none → no request).
- ``404`` on PATCH: deleted in ErzyCall. Forget the id and create it again.
- ``400``/``422``: the API rejects this payload. Failed, with the API's error recorded; the hash
  is remembered so the same payload is not sent again until the contact changes.
- ``429``/``5xx``/transport errors that survive the client's retries: failed, retried next run
  with the same idempotency key. ``UNAVAILABLE_AFTER`` such failures in a row mean the API is
  down: the run stops (``report.api_unavailable``) and what was not tried is deferred.
- ``401``/``403``: the key cannot work for anyone. Stop the run at once (:class:`SyncAborted`);
  operations not yet tried are recorded as deferred so they go first next time.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from erzy_pipelines.core.payload import changed_fields, create_body, idempotency_key, payload_hash
from erzy_pipelines.core.plan import Action, Operation, Plan, plan_contact
from erzy_pipelines.erzycall import errors
from erzy_pipelines.erzycall.client import ErzyCallClient
from erzy_pipelines.erzycall.models import Contact as RemoteContact
from erzy_pipelines.runtime.stop import StopSignal, SyncStopped

#: Outcomes an operation can end in; the audit's ``outcome`` column uses exactly these.
OUTCOMES = (
    "created",
    "updated",
    "adopted",
    "recreated",
    "unchanged",
    "deferred",
    "failed",
    "planned",
)


class SyncAborted(RuntimeError):
    """The run cannot go on (revoked key, missing scope, state database gone)."""


@dataclass(frozen=True)
class Budget:
    """The most a run may spend. ``None`` means no cap besides the rate limiter."""

    max_requests: int | None = None
    max_seconds: float | None = None


@dataclass
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
    unavailable: bool = False  # failed for want of the API (network, 5xx, 429), every retry spent

    @classmethod
    def of(cls, op: Operation, outcome: str, **fields: Any) -> OperationResult:
        """The result row of a planned operation; ``fields`` add status, error, attempts..."""
        row = cls(
            phone=op.contact.phone,
            crm_ids=tuple(op.contact.crm_ids),
            action=str(op.action),
            outcome=outcome,
            remote_id=op.remote_id,
            payload_hash=op.payload_hash,
        )
        for name, value in fields.items():
            setattr(row, name, value)
        return row

    def audit_row(self, run_id: str, partition_key: str) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "partition_key": partition_key,
            "crm_ids": ",".join(self.crm_ids),
            "phone": self.phone,
            "action": self.action,
            "outcome": self.outcome,
            "http_status": self.http_status,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "remote_id": self.remote_id,
            "payload_hash": self.payload_hash,
        }


@dataclass
class SyncReport:
    """What a run did: per-operation results, counts by outcome and requests spent."""

    results: list[OperationResult] = field(default_factory=list)
    requests: int = 0
    aborted: str | None = None
    api_unavailable: bool = False  # aborted because the API stopped answering, not for the key
    stopped: str | None = None  # a stop was requested (SIGTERM, Ctrl-C, run canceled): why

    @property
    def counts(self) -> Counter[str]:
        return Counter(r.outcome for r in self.results)


#: Operations in a row that fail for want of the API (no connection, timeouts, 5xx, 429) before
#: the run stops. Each one has already spent every retry, so three in a row means the API is
#: down: trying the rest would cost minutes of backoff (and rate budget) per contact for nothing.
UNAVAILABLE_AFTER = 3

ProgressCallback = Callable[[int, int, int], None]
"""Called as ``(operations_done, operations_total, requests_spent)``."""


def remote_payload(remote: RemoteContact) -> dict[str, Any]:
    """The remote contact in the same shape as ``core.payload.to_payload``, to diff against."""
    return {**remote.as_payload(), "groupIds": sorted(remote.group_ids)}


class _Executor:
    def __init__(self, client: ErzyCallClient, store: Any, run_id: str, partition_key: str):
        self.client = client
        self.store = store
        self.run_id = run_id
        self.partition_key = partition_key

    # Each method returns the finished OperationResult; state is committed inside.
    def run(self, op: Operation) -> OperationResult:
        phone = op.contact.phone
        result = OperationResult.of(op, "failed")
        if not self.store.begin_intent(
            phone, self.run_id, op.intent_seq, op.payload_hash, op.idempotency_key
        ):
            result.outcome, result.error_code = "deferred", "claimed_by_another_run"
            return result
        before = self.client.requests_sent
        try:
            if op.action == Action.CREATE:
                self._create(op, result)
            else:
                self._update(op, result)
        except (errors.ValidationError, errors.UnprocessableError) as exc:
            self._failed(op, result, exc, permanent=True)
        except (errors.AuthenticationError, errors.PermissionDeniedError) as exc:
            self._failed(op, result, exc, permanent=False)
            raise
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

    def _adopt(self, op: Operation, result: OperationResult) -> None:
        existing = self.client.find_contact_by_phone(op.contact.phone)
        if existing is None:
            raise errors.ConflictError(
                "create answered 409 CONFLICT but no contact with this exact phone was found",
                status=409,
                code="CONFLICT_UNRESOLVED",
            )
        diff = changed_fields(remote_payload(existing), op.payload)
        result.http_status = 200
        if diff:
            # The diff depends on what ErzyCall holds right now, so the key hashes the diff:
            # the same key must never carry two different bodies.
            key = idempotency_key("adopt", op.contact.phone, op.intent_seq, payload_hash(diff))
            self.client.update_contact(existing.id, diff, key)
        self._succeeded(op, result, existing.id, created=False, outcome="adopted")

    def _update(self, op: Operation, result: OperationResult) -> None:
        assert op.remote_id is not None
        try:
            self.client.update_contact(op.remote_id, op.body, op.idempotency_key)
        except errors.NotFoundError:
            # Deleted in ErzyCall: forget the id and create the contact again, with a key of its
            # own so the recreate can never replay an old create of this phone.
            self.store.forget_remote(op.contact.phone)
            key = idempotency_key("recreate", op.contact.phone, op.intent_seq, op.payload_hash)
            recreate = Operation(
                action=Action.CREATE,
                contact=op.contact,
                payload=op.payload,
                body=create_body(op.payload),
                payload_hash=op.payload_hash,
                remote_id=None,
                intent_seq=op.intent_seq,
                idempotency_key=key,
            )
            self._create(recreate, result, outcome="recreated")
            return
        result.http_status = 200
        self._succeeded(op, result, op.remote_id, created=False, outcome="updated")

    def _succeeded(
        self, op: Operation, result: OperationResult, remote_id: str, *, created: bool, outcome: str
    ) -> None:
        self.store.record_success(
            op.contact.phone,
            remote_id=remote_id,
            payload=op.payload,
            payload_hash=op.payload_hash,
            crm_ids=list(op.contact.crm_ids),
            created=created,
            outcome=outcome,
        )
        result.outcome = outcome
        result.remote_id = remote_id

    def _failed(
        self, op: Operation, result: OperationResult, exc: errors.ErzyCallError, *, permanent: bool
    ) -> None:
        result.outcome = "failed"
        result.http_status = exc.status
        result.error_code = exc.code or type(exc).__name__
        result.error_message = str(exc)
        self.store.record_failure(
            op.contact.phone,
            outcome="failed",
            error_code=result.error_code,
            error_message=result.error_message,
            payload_hash=op.payload_hash,
            permanent=permanent,
        )


def _deferred(ops: Iterable[Operation], reason: str) -> list[OperationResult]:
    return [OperationResult.of(op, "deferred", error_code=reason) for op in ops]


def _replan_under_lease(store: Any, op: Operation) -> Operation | None:
    """Plan the contact again against its state as it is now that this run holds its lease.

    Concurrent runs (a group backfill next to the daily sync) plan from the same state. Another
    run may have sent this contact since: the fresh plan sends only what is still missing,
    diffed against what was really sent last, under a key of its own — or nothing (``None``).
    """
    current = store.load_states([op.contact.phone]).get(op.contact.phone)
    fresh = plan_contact(op.contact, current)
    if fresh is None or fresh.action is Action.SKIP_REJECTED:
        return None
    return fresh


def _unchanged(op: Operation) -> OperationResult:
    return OperationResult.of(op, "unchanged", error_code="done_by_another_run")


def planned_results(plan: Plan) -> list[OperationResult]:
    """Audit rows for a dry run: every operation the plan would send, nothing sent."""
    return [OperationResult.of(op, "planned") for op in plan.operations]


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
) -> SyncReport:
    """Send the plan's operations in order until done, out of budget, stopped or aborted.

    ``reconciled``: the plan was made against what ErzyCall holds (a full resync), so it is
    sent as planned instead of being re-planned against the stored state under each lease.

    Every operation's audit row is committed right after its outcome; the report is returned
    even when the run aborts (``report.aborted`` holds the reason and ``SyncAborted`` is *not*
    raised here, so the caller can record the run before failing it).

    ``stop`` is looked at before each operation and in every wait (the client sleeps through
    it): the operation in flight is finished, or — stopped while waiting for its turn — left as
    a committed intent that the next run retries with the same key. What was not done is
    deferred (``run_stopped``) and goes first next run; ``report.stopped`` says why.
    """
    stop = stop or StopSignal()
    report = SyncReport()
    left_over: list[OperationResult] = []
    executor = _Executor(client, store, run_id, partition_key)
    ops: Sequence[Operation] = plan.operations
    started, start_requests = clock(), client.requests_sent
    unavailable_streak = 0
    for index, op in enumerate(ops):
        spent = client.requests_sent - start_requests
        if budget.max_requests is not None and spent >= budget.max_requests:
            left_over = _deferred(ops[index:], "request_budget")
            break
        if budget.max_seconds is not None and clock() - started >= budget.max_seconds:
            left_over = _deferred(ops[index:], "time_budget")
            break
        if stop.requested():
            left_over = _deferred(ops[index:], "run_stopped")
            report.stopped = stop.reason
            break
        if not store.claim(op.contact.phone, run_id):
            result = _deferred([op], "claimed_by_another_run")[0]
        elif (fresh := op if reconciled else _replan_under_lease(store, op)) is None:
            store.release(op.contact.phone, run_id)
            result = _unchanged(op)
        else:
            op = fresh
            try:
                result = executor.run(op)
            except SyncStopped:
                # Stopped while waiting for the limiter or a retry: the intent stays committed,
                # so the next run sends it with the same idempotency key.
                left_over = _deferred(ops[index:], "run_stopped")
                report.stopped = stop.reason
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
                store.add_audit([r.audit_row(run_id, partition_key) for r in [failed, *rest]])
                store.record_deferred([r.phone for r in rest], run_id)
                report.aborted = f"{exc.status} {exc.code}: {exc}"
                break
            finally:
                store.release(op.contact.phone, run_id)
        report.results.append(result)
        store.add_audit([result.audit_row(run_id, partition_key)])
        if on_progress is not None:
            on_progress(index + 1, len(ops), client.requests_sent - start_requests)
        unavailable_streak = unavailable_streak + 1 if result.unavailable else 0
        if unavailable_streak >= UNAVAILABLE_AFTER and index + 1 < len(ops):
            rest = _deferred(ops[index + 1 :], "api_unavailable")
            report.results += rest
            store.add_audit([r.audit_row(run_id, partition_key) for r in rest])
            store.record_deferred([r.phone for r in rest], run_id)
            report.aborted = (
                f"{unavailable_streak} operations in a row failed after every retry; "
                f"last: {result.error_message}"
            )
            report.api_unavailable = True
            break
    if left_over:
        report.results += left_over
        store.add_audit([r.audit_row(run_id, partition_key) for r in left_over])
        store.record_deferred([r.phone for r in left_over], run_id)
    report.requests = client.requests_sent - start_requests
    return report
