"""The words the audit and the run log are written in: what happened to each contact or CRM
record (``Outcome``), what an audit row is about (``AuditAction``), how a run ended
(``RunStatus``), and which outcomes each of the run's counters adds up.

String enums: each member *is* its word, so the stored rows and every reader stay the same.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """One audit row's ``outcome``."""

    CREATED = "created"
    UPDATED = "updated"
    ADOPTED = "adopted"  # a contact another tool created, taken over by phone
    RECREATED = "recreated"  # a contact deleted in ErzyCall, created again
    DELETED = "deleted"  # the opt-in removal (core/removal.py)
    UNCHANGED = "unchanged"
    DEFERRED = "deferred"  # left for the next run: a cap, the budget, another run's lease
    FAILED = "failed"
    PLANNED = "planned"  # a dry run's row
    REJECTED = "rejected"
    MERGED = "merged"


class AuditAction(StrEnum):
    """What one audit row is about: an operation (create, update, delete), or a CRM record that
    costs no request (rejected, merged into another record, or a payload the API refused before)."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    REJECT = "reject"
    MERGE = "merge"
    SKIP = "skip"


class RunStatus(StrEnum):
    """How a run ended (``erzy_sync_runs.status``)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEFERRED = "deferred"  # it did not finish: work left for the next run (never a plain success)
    FAILED = "failed"
    STOPPED = "stopped"
    ABORTED = "aborted"


#: Writes ErzyCall confirmed.
SENT_OUTCOMES = (Outcome.CREATED, Outcome.UPDATED, Outcome.ADOPTED, Outcome.RECREATED)

#: Audit rows about a CRM record rather than a contact.
RECORD_ACTIONS = (AuditAction.REJECT, AuditAction.MERGE)

#: The run log's counters, and which outcomes feed each.
RUN_COUNTERS: dict[str, tuple[Outcome, ...]] = {
    "created": (Outcome.CREATED, Outcome.RECREATED),
    "updated": (Outcome.UPDATED, Outcome.ADOPTED),
    "unchanged": (Outcome.UNCHANGED,),
    "merged": (Outcome.MERGED,),
    "rejected": (Outcome.REJECTED,),
    "failed": (Outcome.FAILED,),
    "deferred": (Outcome.DEFERRED,),
    "planned": (Outcome.PLANNED,),
    "deleted": (Outcome.DELETED,),
}
