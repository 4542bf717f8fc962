"""What a run records of the operations it sends: one result per operation, and the run's report.

Kept apart from the sending (``send.py``) because more than the sender reads them: the run
(``run.py``) audits and counts them, a dry run makes them without sending anything
(:func:`planned_results`), and the Dagster side previews them. An :class:`OperationResult` is
exactly one audit row; :class:`SyncReport` is what :func:`erzy_pipelines.sync.send.execute_plan`
hands back; :class:`Budget` is the cap it was given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from erzy_pipelines.core.outcomes import Outcome
from erzy_pipelines.core.plan import Operation, Plan
from erzy_pipelines.state import AUDIT_FIELDS


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
            run_id, partition_key, ",".join(self.crm_ids), self.phone, str(self.action),
            str(self.outcome),
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


ProgressCallback = Callable[[int, int, int], None]
"""Called as ``(operations_done, operations_total, requests_spent)``."""


def deferred(ops: Iterable[Operation], reason: str) -> list[OperationResult]:
    """Results for operations not tried this run; ``reason`` goes in the audit's error code."""
    return [OperationResult.of(op, Outcome.DEFERRED, error_code=reason) for op in ops]


def done_by_another_run(op: Operation) -> OperationResult:
    """The result of an operation that, checked under the lease, had nothing left to send."""
    return OperationResult.of(op, Outcome.UNCHANGED, error_code="done_by_another_run")


def planned_results(plan: Plan) -> list[OperationResult]:
    """Audit rows for a dry run: every operation the plan would send, nothing sent."""
    return [OperationResult.of(op, Outcome.PLANNED, attempts=op.requests) for op in plan.operations]
