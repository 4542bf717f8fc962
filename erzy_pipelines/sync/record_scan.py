"""One pass over the CRM's contacts query: every record fingerprinted, the changed ones handed on.

This is the loop that runs once per CRM record, a million times on a large CRM, so it does as
little as it can for a record whose fingerprint is the stored one: it takes that record's phone
(or stored reject) from the record cache and moves on. How fingerprints are seeded (the
normalization environment) is the caller's business: ``prepare.py`` passes ``fingerprint_for``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from erzy_pipelines.core.crm_row import Membership, to_record
from erzy_pipelines.core.group_figures import UNGROUPED_KEY
from erzy_pipelines.core.normalize import Reject
from erzy_pipelines.state.record_cache import Known
from erzy_pipelines.sync.records import Record
from erzy_pipelines.sync.workers import Item

PREVIEW_ROWS = 10
PREVIEW_SCAN_ROWS = 5_000
"""Previews (up to ``PREVIEW_ROWS`` per group) are taken from the first rows read."""

Fingerprint = Callable[[Sequence[Any], Any], int]
"""``fingerprint(raw_row, memberships)``, as ``prepare.fingerprinter`` makes it."""


@dataclass
class Scan:
    records: list[Record]
    changed: int  # records whose fingerprint was not the stored one
    vanished: list[str]
    columns: list[str]
    preview: list[dict[str, Any]]
    kept_rejects: dict[int, Reject]  # id(record) → its stored reject, for unchanged rejects


def scan_records(
    batches: Iterable[tuple[list[str], Sequence[Sequence[Any]]]],
    memberships: Mapping[str, Sequence[Membership]],
    known: dict[str, Known],
    stored_rejects: Mapping[str, Reject],
    fingerprint_for: Callable[[list[str]], Fingerprint],
    in_scope: Callable[[str | None, tuple[str, ...]], bool],
    on_changed: Callable[[Record, list[str], Item], None],
) -> Scan:
    """Fingerprint every record (with ``fingerprint_for(columns)``, made at the first batch);
    hand each whose fingerprint is not the stored one to ``on_changed`` with the query's columns
    and its raw item (row, crm_id, memberships). ``known`` is consumed: what is left in it
    afterwards has vanished."""
    records: list[Record] = []
    changed = 0
    kept_rejects: dict[int, Reject] = {}
    preview: dict[str, list[dict[str, Any]]] = {}
    keys_of: dict[Any, tuple[str, ...]] = {}  # memberships → sorted group keys (few distinct)
    columns: list[str] = []
    fingerprint: Fingerprint | None = None
    i_crm = 0
    for cols, rows in batches:
        if fingerprint is None:
            columns, i_crm = cols, cols.index("crm_id")
            fingerprint = fingerprint_for(cols)
        for row in rows:
            raw_id = row[i_crm]
            crm_id = None if raw_id is None else (raw_id if type(raw_id) is str else str(raw_id))
            member_of = memberships.get(crm_id, ()) if crm_id is not None else ()
            keys = keys_of.get(member_of)
            if keys is None:
                keys = keys_of[member_of] = tuple(sorted({key for key, _ in member_of}))
            record = Record(crm_id, keys, fingerprint(row, member_of))
            records.append(record)
            before = known.pop(crm_id, None) if crm_id is not None else None
            is_new = (
                before is None
                or before[0] != record.fingerprint
                or (before[1] is None and crm_id not in stored_rejects)
            )
            if not is_new:
                record.phone = before[1]  # type: ignore[index]
                if record.phone is None:
                    kept_rejects[id(record)] = stored_rejects[crm_id]  # type: ignore[index]
            wanted = None
            if len(records) <= PREVIEW_SCAN_ROWS and in_scope(crm_id, keys):
                slot_key = keys[0] if keys else UNGROUPED_KEY
                slot = preview.get(slot_key)
                if slot is None:
                    slot = preview[slot_key] = []
                if len(slot) < PREVIEW_ROWS:
                    wanted = slot
            if is_new:
                changed += 1
                on_changed(record, cols, (tuple(row), crm_id, member_of))
            if wanted is not None:
                wanted.append(to_record(cols, row, crm_id, member_of))
    vanished = list(known)
    rows_preview = [row for slot in preview.values() for row in slot]
    return Scan(records, changed, vanished, columns, rows_preview, kept_rejects)
