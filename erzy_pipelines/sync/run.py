"""One whole sync step: plan against the state, then send (or, on a dry run, only record) it.

``execute_run(RunRequest(...))`` is what the sync and plan assets call: it opens the run's row in
``erzy_sync_runs``, audits rejects, merges and skipped payloads, hands
the operations to :func:`erzy_pipelines.sync.send.execute_plan`, and closes the run with counts
taken from the audit.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from erzy_pipelines.core.outcomes import (
    RECORD_ACTIONS,
    RUN_COUNTERS,
    SENT_OUTCOMES,
    AuditAction,
    Outcome,
    RunStatus,
)
from erzy_pipelines.core.ownership import REPLACE, Ownership
from erzy_pipelines.core.payload import payload_hash, to_payload
from erzy_pipelines.core.plan import ContactState, Operation, Plan, plan_operations
from erzy_pipelines.core.removal import Removal, plan_removals
from erzy_pipelines.erzycall.client import ErzyCallClient
from erzy_pipelines.erzycall.models import RemoteContact
from erzy_pipelines.sync.accounts import Account
from erzy_pipelines.sync.background_writer import BackgroundWriter
from erzy_pipelines.sync.lease_keeper import DEFAULT_LEASE_SECONDS, LeaseKeeper
from erzy_pipelines.sync.prepare import gc_paused
from erzy_pipelines.sync.send import (
    Budget,
    OperationResult,
    ProgressCallback,
    SyncReport,
    audit,
    execute_plan,
    planned_results,
    remote_payload,
)
from erzy_pipelines.sync.stop import StopSignal, SyncStopped

PLAN_CHUNK = 25_000

DELETED_IN_ERZYCALL_MODES = ("recreate", "respect")
"""What a reconcile does with a contact deleted in ErzyCall whose CRM record did not change:
create it again, or leave it deleted until the CRM record changes."""



@dataclass
class RunSummary:
    """Everything a caller shows about one sync step."""

    plan: Plan
    report: SyncReport
    counts: dict[str, int]
    dry_run: bool
    account: Account | None = None  # the ErzyCall account the run's state describes

    @property
    def requests(self) -> int:
        return self.report.requests


def _pre_send_rows(
    rejects: Sequence[Any], merges: Sequence[Any], skipped: Sequence[Operation]
) -> list[OperationResult]:
    rows = [
        OperationResult(
            phone=r.phone or "",
            crm_ids=(r.crm_id or "",),
            action=AuditAction.REJECT,
            outcome=Outcome.REJECTED,
            error_code=r.reason,
            error_message=r.detail,
        )
        for r in rejects
    ]
    rows += [
        OperationResult(
            phone=m.phone,
            crm_ids=(m.merged_crm_id,),
            action=AuditAction.MERGE,
            outcome=Outcome.MERGED,
            error_message=f"merged into CRM id {m.survivor_crm_id}",
        )
        for m in merges
    ]
    rows += [
        OperationResult.of(
            op,
            Outcome.REJECTED,
            action=AuditAction.SKIP,
            error_code="previously_rejected_by_api",
            error_message="the API rejected this exact payload before; "
            "not sent until the contact changes",
        )
        for op in skipped
    ]
    return rows




def _run_counts(
    audited: Iterable[tuple[str, str, str]], unchanged: Sequence[str]
) -> Counter[str]:
    """Outcome counts of a run from its audit rows' (action, phone, outcome), newest first:
    rejects and merges one each, every contact once by its latest outcome (a retried step may
    have tried it in an earlier attempt), plus the unchanged contacts (by phone) no attempt of
    the run listed."""
    outcomes: Counter[str] = Counter()
    latest: dict[str, str] = {}
    for action, phone, outcome in audited:
        if action in RECORD_ACTIONS:
            outcomes[outcome] += 1
        else:
            latest.setdefault(phone, outcome)
    outcomes.update(latest.values())
    outcomes[Outcome.UNCHANGED] += sum(1 for phone in unchanged if phone not in latest)
    return outcomes


def _newest_first(rows: Sequence[OperationResult]) -> Iterable[tuple[str, str, str]]:
    return ((r.action, r.phone, r.outcome) for r in reversed(rows))


@dataclass
class Drift:
    """What a reconcile's listing found changed in ErzyCall behind the sync's back."""

    deleted: set[str] = field(default_factory=set)  # phones whose contact is gone from ErzyCall
    edited: set[str] = field(default_factory=set)  # phones whose owned fields were edited there
    respected: set[str] = field(default_factory=set)  # deleted, left deleted (``respect``)

    def repaired(self, results: Iterable[OperationResult]) -> dict[str, int]:
        """``drift_deleted`` / ``drift_edited``: drift the run's writes repaired."""
        counts = {"drift_deleted": 0, "drift_edited": 0}
        for result in results:
            if result.outcome in SENT_OUTCOMES:
                if result.phone in self.deleted and result.phone not in self.respected:
                    counts["drift_deleted"] += 1
                elif result.phone in self.edited:
                    counts["drift_edited"] += 1
        return counts


def states_from_remote(
    states: dict[str, Any],
    remote_contacts: Iterable[RemoteContact],
    ownership: Ownership = REPLACE,
    *,
    respect_deleted: bool = False,
) -> tuple[dict[str, Any], Drift]:
    """Replace stored knowledge with what ErzyCall really holds (full resync / reconcile).

    A phone found remotely gets its real id and, as the "last sent" payload, the part of what
    ErzyCall holds that the sync owns (``Ownership.owned_view``), so the plan sends exactly the
    drift and leaves what ErzyCall's users added alone; a stored id that is gone remotely is
    dropped, so the plan creates the contact again — unless ``respect_deleted``: then its state
    is kept as it was, so it stays deleted while its CRM record is unchanged (a later change is
    a PATCH that meets 404 and creates it again). Payloads the API rejected before are tried
    again. Returns (states, the drift found).
    """
    by_phone = {c.phone: c for c in remote_contacts}
    current = {phone: remote_payload(remote) for phone, remote in by_phone.items()}
    out: dict[str, Any] = {}
    drift = Drift()
    for phone in set(states) | set(by_phone):
        old = states.get(phone)
        remote = current.get(phone)
        if remote is None and old is not None and old.remote_id is not None:
            drift.deleted.add(phone)
            if respect_deleted:
                drift.respected.add(phone)
                out[phone] = old
                continue
        owned = ownership.owned_view(remote, old.last_payload if old else None) if remote else None
        if owned is not None and old is not None and old.last_payload not in (None, owned):
            drift.edited.add(phone)
        out[phone] = ContactState(
            phone=phone,
            remote_id=by_phone[phone].id if remote else None,
            last_payload=owned,
            last_hash=payload_hash(owned) if owned else None,
            last_outcome=old.last_outcome if old else None,
            rejected_hash=None,
            intent_seq=old.intent_seq if old else 0,
            pending_hash=old.pending_hash if old else None,
            deferred=old.deferred if old else False,
            failure_count=old.failure_count if old else 0,
        )
    return out, drift


@dataclass(frozen=True)
class RunRequest:
    """Everything one engine run needs: what to sync, where, and how.

    ``contacts``, ``rejects``, ``merges``, ``settled`` and ``fingerprints`` come from preparing
    the CRM (``prepare.Prepared.sync_inputs``). ``settled`` are the phones whose contact needs
    nothing: counted unchanged, never loaded or planned. ``fingerprints`` (phone → its CRM
    records' fingerprint) is stored with each confirmed payload, so the next run can tell the
    contact is settled.

    ``store`` is bound to the run's ErzyCall account (``sync/accounts.py``); ``account`` says how it
    was recognized (its probe requests count in the run's total). ``client_factory(sleep)``
    builds the client; every wait it makes goes through ``sleep``, which keeps the run's contact
    lease alive (``lease_keeper.py``). A dry run never builds a client, so it cannot send
    anything.

    ``reconcile`` first lists ErzyCall (⌈N/100⌉ requests) and plans against what is really there
    instead of the stored hashes. ``read_started`` (epoch seconds): when the run began reading
    the CRM; a contact whose value in ErzyCall came from a later read (another run's) is not
    sent. ``send_slot`` is entered right before the first request and left after the last (the
    ``erzycall_api`` pool slot): a run with nothing to send never waits for it. ``stop`` ends
    the sending early (see :func:`execute_plan`); a stop during the listing raises SyncStopped.
    """

    contacts: Sequence[Any]
    rejects: Sequence[Any]
    merges: Sequence[Any]
    store: Any
    client_factory: Callable[[Callable[[float], None]], ErzyCallClient]
    run_id: str
    partition_key: str
    settled: Sequence[str] = ()
    fingerprints: Mapping[str, int] | None = None
    dry_run: bool = False
    reconcile: bool = False
    respect_deleted: bool = False
    removal: Removal | None = None
    budget: Budget | None = None
    on_progress: ProgressCallback | None = None
    stop: StopSignal | None = None
    send_slot: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    account: Account | None = None
    ownership: Ownership = REPLACE
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    read_started: float | None = None


@dataclass
class _Attempt:
    """One attempt of a run: a retried step reopens its run, and the rows its earlier attempts
    audited stay (they say what was sent); this attempt does not audit the same rejects, merges
    and skips again."""

    earlier: list[tuple[str, str, str]]
    records_audited: bool
    skips_audited: set[str]

    @classmethod
    def open(cls, req: RunRequest) -> _Attempt:
        earlier = req.store.audit_outcomes(req.run_id)
        attempt = cls(
            earlier,
            any(action in RECORD_ACTIONS for action, _, _ in earlier),
            {phone for action, phone, _ in earlier if action == AuditAction.SKIP},
        )
        req.store.start_run(req.run_id, req.partition_key, req.dry_run)
        return attempt

    def not_yet_audited(self, rows: Iterable[OperationResult]) -> list[OperationResult]:
        return [
            r
            for r in rows
            if not (r.action in RECORD_ACTIONS and self.records_audited)
            and not (r.action == AuditAction.SKIP and r.phone in self.skips_audited)
        ]


def execute_run(req: RunRequest) -> RunSummary:
    """Plan the contacts against the state, then send (or, on a dry run, only record) the plan.

    Rejects, merges and unchanged contacts cost no request. The run's row in ``erzy_sync_runs``
    is opened first and always closed: with counts taken from the audit, or as stopped/failed.
    """
    stop = req.stop or StopSignal()
    store, report = req.store, SyncReport()
    sending = contextlib.ExitStack()
    keeper = LeaseKeeper(store, req.run_id, req.lease_seconds, stop)
    client: ErzyCallClient | None = None

    def open_client() -> ErzyCallClient:
        sending.enter_context(req.send_slot())
        opened = sending.enter_context(contextlib.closing(req.client_factory(keeper.sleep)))
        opened.before_attempt = keeper.confirm
        return opened

    report.requests += req.account.probes if req.account is not None else 0
    attempt = _Attempt.open(req)
    states = store.load_states([c.phone for c in req.contacts])
    drift: Drift | None = None
    budget = req.budget
    try:
        if req.reconcile and not req.dry_run:
            client = open_client()
            states, drift, budget = _list_erzycall(req, client, states, report, budget)
        with gc_paused():  # a plan of a million contacts is a few million objects
            plan, pre = _plan_and_audit(req, states, attempt, report)
        if plan.operations and not req.dry_run:
            client = client or open_client()
            sent = execute_plan(
                plan,
                client=client,
                store=store,
                run_id=req.run_id,
                partition_key=req.partition_key,
                budget=budget or Budget(),
                on_progress=req.on_progress,
                reconciled=req.reconcile,
                stop=stop,
                keeper=keeper,
                ownership=req.ownership,
                read_started=req.read_started,
            )
            sent.requests += report.requests
            sent.removal_refused = report.removal_refused
            report = sent
        sending.close()
        counts = _close_run(req, attempt, plan, pre, report, drift)
        return RunSummary(
            plan=plan, report=report, counts=counts, dry_run=req.dry_run, account=req.account
        )
    except BaseException as exc:
        # Stopped, or infrastructure gone mid-run: close the run row if the state database
        # still answers; the step retry (or the next run) starts a fresh one.
        status = RunStatus.STOPPED if isinstance(exc, SyncStopped) else RunStatus.FAILED
        with contextlib.suppress(Exception):
            store.finish_run(req.run_id, {"requests": report.requests}, status)
        raise
    finally:
        sending.close()


def _list_erzycall(
    req: RunRequest,
    client: ErzyCallClient,
    states: dict[str, ContactState],
    report: SyncReport,
    budget: Budget | None,
) -> tuple[dict[str, ContactState], Drift, Budget | None]:
    """A reconcile's listing: the states ErzyCall really holds, the drift found, and the
    budget left (the listing is part of a request cap)."""
    before = client.requests_sent
    states, drift = states_from_remote(
        states, client.list_contacts(limit=100), req.ownership, respect_deleted=req.respect_deleted
    )
    report.requests += client.requests_sent - before
    if budget and budget.max_requests is not None:
        left = max(0, budget.max_requests - report.requests)
        budget = Budget(max_requests=left, max_seconds=budget.max_seconds)
    return states, drift, budget


def _plan_and_audit(
    req: RunRequest, states: Mapping[str, ContactState], attempt: _Attempt, report: SyncReport
) -> tuple[Plan, list[OperationResult]]:
    """The run's plan (removals included), with what needs no request settled and audited:
    the plan, and the audit rows written before sending (rejects, merges, skips)."""
    store, run_id, key = req.store, req.run_id, req.partition_key
    if req.dry_run:
        plan, report.results = _plan_dry_run(
            req.contacts,
            states,
            req.ownership,
            req.fingerprints,
            audit=lambda rows: audit(store, rows, run_id, key),
        )
    else:
        plan = plan_operations(req.contacts, states, req.ownership, fingerprints=req.fingerprints)
    deletions, report.removal_refused = _removals(store, req.removal)
    if deletions:
        plan = Plan(
            plan.operations + deletions,
            plan.unchanged,
            plan.skipped,
            plan.requests_needed + len(deletions),
        )
        if req.dry_run:
            planned = planned_results(Plan(deletions))
            audit(store, planned, run_id, key)
            report.results += planned
    if req.fingerprints is not None and not req.dry_run:
        fingerprints = req.fingerprints
        store.mark_settled(
            (c.phone, payload_hash(to_payload(c)), fingerprints[c.phone])
            for c in plan.unchanged
            if c.phone in fingerprints
        )
    store.clear_deferred(
        [c.phone for c in plan.unchanged] + [op.contact.phone for op in plan.skipped]
    )
    pre = attempt.not_yet_audited(_pre_send_rows(req.rejects, req.merges, plan.skipped))
    audit(store, pre, run_id, key)
    return plan, pre


def _close_run(
    req: RunRequest,
    attempt: _Attempt,
    plan: Plan,
    pre: list[OperationResult],
    report: SyncReport,
    drift: Drift | None,
) -> dict[str, int]:
    """The run's counts, written to its row with its status. What this attempt audited is at
    hand (a dry run wrote its plan before the rest); a retried step's earlier attempts are
    read back."""
    written = report.results + pre if req.dry_run else pre + report.results
    audited = req.store.audit_outcomes(req.run_id) if attempt.earlier else _newest_first(written)
    outcomes = _run_counts(audited, [c.phone for c in plan.unchanged] + list(req.settled))
    counts = {name: sum(outcomes[o] for o in feeds) for name, feeds in RUN_COUNTERS.items()}
    counts["requests"] = report.requests
    if drift is not None:
        counts.update(drift.repaired(report.results))
    req.store.finish_run(req.run_id, counts, _status(report, counts))
    return counts


def _plan_dry_run(
    contacts: Sequence[Any],
    states: Mapping[str, ContactState],
    ownership: Ownership,
    fingerprints: Mapping[str, int] | None,
    audit: Callable[[list[OperationResult]], None],
) -> tuple[Plan, list[OperationResult]]:
    """A dry run's plan, made and audited a chunk of contacts at a time: only each operation's
    small result row is kept, never a million operations with their bodies. The plan returned
    has the counts and requests of the whole, and no operations. One chunk's audit rows are
    written (on a thread: the database works while the next chunk is planned) at a time."""
    unchanged: list[Any] = []
    skipped: list[Operation] = []
    results: list[OperationResult] = []
    needed = 0
    with BackgroundWriter("erzy-audit") as writer:
        for i in range(0, len(contacts), PLAN_CHUNK):
            part = plan_operations(
                contacts[i : i + PLAN_CHUNK],
                states,
                ownership,
                fingerprints=fingerprints,
                with_keys=False,  # nothing is sent
            )
            unchanged += part.unchanged
            skipped += part.skipped
            needed += part.requests_needed
            rows = planned_results(part)
            writer.submit(audit, rows)
            results += rows
    return Plan([], unchanged, skipped, needed), results


def _removals(store: Any, removal: Removal | None) -> tuple[list[Operation], str | None]:
    """The DELETEs of the opt-in removal (none when it is off), or none and why."""
    if removal is None:
        return [], None
    return plan_removals(store.created_contacts(removal.before), store.created_count(), removal)


def _status(report: SyncReport, counts: dict[str, int]) -> str:
    if report.stopped:
        return RunStatus.STOPPED
    if report.aborted:
        return RunStatus.ABORTED
    if counts["failed"]:
        return RunStatus.FAILED
    # Work left for the next run (a cap, the key's budget, a contact held by another run) is not
    # a failure, but the run did not finish: it never reads as a plain success.
    return RunStatus.DEFERRED if counts["deferred"] else RunStatus.SUCCEEDED
