"""What one run did for each contact group: the figures a group's partition reports.

A CRM record belongs to the partitions of its groups (``_ungrouped`` when it has none); a
contact (one per phone) to those of all the records merged into it. A contact in two groups is
counted in both, so the groups' figures can add up to more than the run's totals, which are
reported once per run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from erzy_pipelines.core.dedupe import Merge
from erzy_pipelines.core.normalize import Contact, Reject
from erzy_pipelines.core.outcomes import SENT_OUTCOMES

UNGROUPED_KEY = "_ungrouped"


class ResultLike(Protocol):
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


class RecordLike(Protocol):
    """The parts of a CRM record the figures need (``incremental.Record``)."""

    crm_id: str | None
    group_keys: tuple[str, ...]
    phone: str | None


def group_figures(
    partition_keys: Sequence[str],
    records: Sequence[RecordLike],
    *,
    rejects: Iterable[Reject],
    contacts: Iterable[str],
    merges: Iterable[Merge],
    dedupe_rejects: Iterable[Reject],
    skipped: Iterable[Contact] = (),
    results: Iterable[ResultLike] = (),
) -> dict[str, GroupFigures]:
    """The figures of each partition in ``partition_keys``; ``records`` are the run's CRM
    records, ``contacts`` the phones of its contacts. See the module docstring.

    Built for a million records: partitions are computed once per distinct set of group keys,
    and only the few records named by rejects, merges and results are looked up by id.
    """
    rejects, merges, dedupe_rejects = list(rejects), list(merges), list(dedupe_rejects)
    results = list(results)
    tally = _Tally(partition_keys, records, set(contacts))
    named = {r.crm_id for r in rejects} | {m.merged_crm_id for m in merges}
    named |= {r.crm_id for r in dedupe_rejects}
    named |= {str(c) for res in results if res.phone not in tally.of_phone for c in res.crm_ids}
    tally.index_records(records, named)
    for reject in rejects:
        tally.add_to_records([reject.crm_id], "rejected", reason=reject.reason)
    for merge in merges:
        tally.add_to_records([merge.merged_crm_id], "merged")
    for reject in dedupe_rejects:
        tally.add_to_records([reject.crm_id], "rejected_after_merge")
    for contact in skipped:
        for key in tally.partitions_of_phone(contact.phone):
            tally.figures[key].skipped += 1
            tally.figures[key].audit_rows += 1
    tally.add_results(results)
    return tally.figures


class _Tally:
    """The figures being counted, and how a record, a phone or a set of group keys maps to
    the wanted partitions (cached: a million records have few distinct sets of groups)."""

    def __init__(
        self, partition_keys: Sequence[str], records: Sequence[RecordLike], contacts: set[str]
    ) -> None:
        self.figures = {key: GroupFigures() for key in partition_keys}
        self._parts: dict[tuple[str, ...], frozenset[str]] = {}
        self.of_record: dict[str, frozenset[str]] = {}
        # A contact's group keys (one record, the common case) or partitions (merged records).
        self.of_phone: dict[str, tuple[str, ...] | frozenset[str]] = {}
        for record in records:
            phone = record.phone
            if phone is not None and phone in contacts:
                before = self.of_phone.get(phone)
                if before is None:
                    self.of_phone[phone] = record.group_keys
                elif before != record.group_keys:
                    self.of_phone[phone] = self.spread(before) | self.parts(record.group_keys)
        for keys, n in Counter(r.group_keys for r in records).items():
            for key in self.parts(keys):
                self.figures[key].crm_records += n
        for keys, n in Counter(r.group_keys for r in records if r.phone is not None).items():
            for key in self.parts(keys):
                self.figures[key].accepted += n
        for value, n in Counter(self.of_phone.values()).items():
            for key in self.spread(value):
                self.figures[key].contacts += n

    def parts(self, keys: tuple[str, ...]) -> frozenset[str]:
        found = self._parts.get(keys)
        if found is None:
            found = self._parts[keys] = frozenset(record_partitions(keys) & self.figures.keys())
        return found

    def spread(self, value: tuple[str, ...] | frozenset[str]) -> frozenset[str]:
        """The partitions of an ``of_phone`` value (group keys, or partitions already)."""
        return self.parts(value) if isinstance(value, tuple) else value

    def index_records(self, records: Sequence[RecordLike], named: set[Any]) -> None:
        """Remember the partitions of the records ``named`` by id (rejects, merges, results)."""
        self.of_record = {
            str(r.crm_id): self.parts(r.group_keys) for r in records if r.crm_id in named
        }

    def partitions_of_phone(self, phone: str) -> frozenset[str]:
        value = self.of_phone.get(phone)
        return frozenset() if value is None else self.spread(value)

    def parts_of(self, crm_ids: Iterable[str | None]) -> set[str]:
        found: set[str] = set()
        for crm_id in crm_ids:
            found |= self.of_record.get(str(crm_id), frozenset())
        return found

    def add_to_records(self, crm_ids: list[str | None], figure: str, reason: str = "") -> None:
        """One audit row about a CRM record: ``figure`` + 1 in each of its partitions."""
        for key in self.parts_of(crm_ids):
            group = self.figures[key]
            setattr(group, figure, getattr(group, figure) + 1)
            if reason:
                group.rejects_by_reason[reason] += 1
            group.audit_rows += 1

    def add_results(self, results: list[ResultLike]) -> None:
        """A million results are tallied by (the contact's groups, outcome) first: few
        distinct values, each then spread over its partitions."""
        outcomes: Counter[tuple[Any, str]] = Counter()
        attempts: Counter[Any] = Counter()
        for result in results:
            value = self.of_phone.get(result.phone)
            if value is None or not self.spread(value):
                value = frozenset(self.parts_of(result.crm_ids))
            outcomes[value, result.outcome] += 1
            attempts[value] += result.attempts
        for (value, outcome), n in outcomes.items():
            for key in self.spread(value):
                group = self.figures[key]
                group.changed += n
                group.outcomes[outcome] += n
                group.audit_rows += n
        for value, n in attempts.items():
            for key in self.spread(value):
                self.figures[key].requests += n
