"""What one run did for each contact group: the figures a group's partition reports.

A CRM record belongs to the partitions of its groups (``_ungrouped`` when it has none); a
contact (one per phone) to those of all the records merged into it. A contact in two groups is
counted in both, so the groups' figures can add up to more than the run's totals, which are
reported once per run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from erzy_pipelines.core.dedupe import Merge
from erzy_pipelines.core.normalize import Contact, Reject

UNGROUPED_KEY = "_ungrouped"
SENT_OUTCOMES = ("created", "updated", "adopted", "recreated")


class Outcome(Protocol):
    """The parts of an operation's result the figures need."""

    phone: str
    crm_ids: tuple[str, ...]
    outcome: str
    attempts: int


@dataclass
class GroupFigures:
    """One group's share of a run."""

    crm_records: int = 0  # CRM records read for the group's members
    accepted: int = 0  # records normalization accepted
    rejected: int = 0  # records normalization rejected
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    contacts: int = 0  # contacts (one per phone) with a member record
    merged: int = 0  # member records merged into another record's contact
    rejected_after_merge: int = 0  # member records rejected by dedupe (too many groups)
    skipped: int = 0  # contacts whose exact payload the API rejected before: not sent
    changed: int = 0  # contacts that needed a write (planned operations)
    outcomes: Counter[str] = field(default_factory=Counter)  # per operation outcome
    requests: int = 0  # HTTP requests spent on the group's contacts
    audit_rows: int = 0  # rows this run wrote to erzy_sync_audit for the group

    @property
    def unchanged(self) -> int:
        """Contacts that needed no request (nothing changed since the last sync)."""
        return self.contacts - self.changed - self.skipped

    @property
    def sent(self) -> int:
        return sum(self.outcomes[o] for o in SENT_OUTCOMES)


def record_partitions(group_keys: Iterable[str]) -> set[str]:
    keys = set(group_keys)
    return keys or {UNGROUPED_KEY}


def group_figures(
    partition_keys: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    normalized: Iterable[Contact],
    rejects: Iterable[Reject],
    contacts: Iterable[Contact],
    merges: Iterable[Merge],
    dedupe_rejects: Iterable[Reject],
    skipped: Iterable[Contact] = (),
    results: Iterable[Outcome] = (),
) -> dict[str, GroupFigures]:
    """The figures of each partition in ``partition_keys``; see the module docstring."""
    figures = {key: GroupFigures() for key in partition_keys}
    of_record: dict[str, set[str]] = {}
    for row in rows:
        parts = record_partitions(row.get("group_keys") or ()) & figures.keys()
        of_record[str(row["crm_id"])] = parts
        for key in parts:
            figures[key].crm_records += 1

    def parts_of(crm_ids: Iterable[str | None]) -> set[str]:
        found: set[str] = set()
        for crm_id in crm_ids:
            found |= of_record.get(str(crm_id), set())
        return found

    for contact in normalized:
        for key in parts_of(contact.crm_ids):
            figures[key].accepted += 1
    for reject in rejects:
        for key in parts_of([reject.crm_id]):
            figures[key].rejected += 1
            figures[key].rejects_by_reason[reject.reason] += 1
            figures[key].audit_rows += 1
    of_phone: dict[str, set[str]] = {}
    for contact in contacts:
        of_phone[contact.phone] = parts = parts_of(contact.crm_ids)
        for key in parts:
            figures[key].contacts += 1
    for merge in merges:
        for key in parts_of([merge.merged_crm_id]):
            figures[key].merged += 1
            figures[key].audit_rows += 1
    for reject in dedupe_rejects:
        for key in parts_of([reject.crm_id]):
            figures[key].rejected_after_merge += 1
            figures[key].audit_rows += 1
    for contact in skipped:
        for key in of_phone.get(contact.phone, set()):
            figures[key].skipped += 1
            figures[key].audit_rows += 1
    for result in results:
        for key in of_phone.get(result.phone) or parts_of(result.crm_ids):
            group = figures[key]
            group.changed += 1
            group.outcomes[result.outcome] += 1
            group.requests += result.attempts
            group.audit_rows += 1
    return figures
