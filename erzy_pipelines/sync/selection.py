"""Which of the scanned records and contacts one run works on, and which it must make again.

A contact is made from the records sharing its phone, so its fingerprint is the sum of theirs
(:func:`clusters`). A contact whose fingerprint is the one its last confirmed write came from is
*settled*: it is neither deduped nor planned. :func:`select_records` works that out for a
run's scope; :func:`contacts_of` then fetches the normalized contacts of what must be redone
(this run's, or those the record cache stored), and :func:`rejects_of` the run's rejects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from erzy_pipelines.core.normalize import Contact, Reject
from erzy_pipelines.core.scope import SyncScope
from erzy_pipelines.state.record_cache import RecordCache
from erzy_pipelines.sync.records import Record

FP_MOD = 1 << 63
"""Fingerprints are below 2**63, and so are sums of them taken modulo 2**63: every one fits a
signed 64-bit column as it is."""


class StaleRecordCache(RuntimeError):
    """Another run rewrote a stored record while this one read it; the step is retried."""


class RunScope:
    """``in_scope(crm_id, group_keys)``: is this record one of the run's? Its groups' records,
    the ungrouped ones when asked for, and ``extra`` (records last sent with a selected group)."""

    def __init__(self, scope: SyncScope, extra: set[str]) -> None:
        self.groups, self.ungrouped, self.extra = scope.groups, scope.include_ungrouped, extra

    @property
    def whole(self) -> bool:
        """The run covers the whole CRM."""
        return self.groups is None

    def __call__(self, crm_id: str | None, keys: tuple[str, ...]) -> bool:
        if self.groups is None or crm_id in self.extra:
            return True
        return bool(self.groups.intersection(keys)) if keys else self.ungrouped


def clusters(records: Iterable[Record]) -> tuple[dict[str, int], set[str]]:
    """phone → the sum of its records' fingerprints modulo 2**63 (order does not matter), and
    the phones with several records."""
    sums: dict[str, int] = {}
    several: set[str] = set()
    for record in records:
        phone = record.phone
        if phone is not None:
            before = sums.get(phone)
            if before is None:
                sums[phone] = record.fingerprint
            else:
                sums[phone] = before + record.fingerprint
                several.add(phone)
    return {phone: fp if fp < FP_MOD else fp % FP_MOD for phone, fp in sums.items()}, several


@dataclass
class Selection:
    """The records and phones of one run, and which of its contacts are not settled."""

    selected: list[Record]  # the records of the run's scope
    run_records: list[Record]  # those and the records sharing a phone with them
    phones: set[str]  # the phones of the selected records
    fingerprints: dict[str, int]  # phone → its records' fingerprint, for contacts not settled
    redo: set[str]  # phones whose contacts are made (and deduped) again


def select_records(
    records: list[Record],
    in_scope: RunScope,
    settled_lookup: Callable[[Iterable[str] | None], dict[str, int]],
    replan_all: bool,
) -> Selection:
    """The run's records and phones. A phone is settled when its fingerprint is the one
    ``settled_lookup`` returns for it (never with ``replan_all``); the others, and every phone
    with several records (so each run audits its merges), are redone."""
    whole = in_scope.whole
    selected = records if whole else [r for r in records if in_scope(r.crm_id, r.group_keys)]
    cluster_fp, several = clusters(records)
    phones = set(cluster_fp) if whole else {r.phone for r in selected if r.phone is not None}
    if whole:
        run_records = records
    else:
        chosen = {id(r) for r in selected}
        run_records = [r for r in records if id(r) in chosen or r.phone in phones]
    settled_fp = {} if replan_all else settled_lookup(None if whole else phones)
    fingerprints = {  # of the phones whose contact is not settled
        phone: cluster_fp[phone] for phone in phones if settled_fp.get(phone) != cluster_fp[phone]
    }
    redo = set(fingerprints.keys()) | (several & phones)
    return Selection(selected, run_records, phones, fingerprints, redo)


def contacts_of(members: list[Record], cache: RecordCache) -> list[Contact]:
    """The normalized contacts of these records: this run's, or those stored for them."""
    stored = cache.contacts(
        r.crm_id for r in members if r.result is None and r.crm_id is not None
    )
    contacts: list[Contact] = []
    for r in members:
        result = r.result
        if isinstance(result, Contact):
            contacts.append(result)
            continue
        fp, contact = stored.get(r.crm_id or "", (None, None))
        if contact is None or fp != r.fingerprint:
            # Replaced by a run that read the CRM at another moment (or unreadable): forget it,
            # so the step's retry normalizes it again.
            cache.save({}, [r.crm_id] if r.crm_id is not None else [])
            raise StaleRecordCache(f"the stored form of CRM record {r.crm_id} changed meanwhile")
        contacts.append(contact)
    return contacts


def rejects_of(run_records: Iterable[Record], kept_rejects: dict[int, Reject]) -> list[Reject]:
    """The run's rejected records: this run's rejects, or those stored for unchanged records
    (``kept_rejects``, by ``id(record)``)."""
    rejects: list[Reject] = []
    for r in run_records:
        if r.phone is None:
            result = r.result
            rejects.append(result if isinstance(result, Reject) else kept_rejects[id(r)])
    return rejects
