"""The tests' from-scratch reference of one sync's local work: read the CRM, normalize, dedupe.

Runs use the incremental path (``erzy_pipelines.sync.prepare``), which normalizes only what
changed; these functions do everything every time and are the reference it is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from erzy_pipelines.core.dedupe import dedupe
from erzy_pipelines.core.normalize import Contact, Reject, normalize_row, normalize_rows
from erzy_pipelines.core.scope import SyncScope
from erzy_pipelines.crm.extract import Membership
from erzy_pipelines.sync.prepare import Prepared
from erzy_pipelines.sync.stop import StopSignal

#: Columns of crm_contacts when the query returned no row at all.
EMPTY_COLUMNS = ["crm_id", "title", "phone", "group_keys", "group_ids"]


def in_scope(row: Mapping[str, Any], scope: SyncScope, extra: set[str]) -> bool:
    if scope.groups is None or row["crm_id"] in extra:
        return True
    keys = row["group_keys"]
    return bool(scope.groups.intersection(keys)) if keys else scope.include_ungrouped


def same_phone_rows(
    selected: list[dict[str, Any]], others: list[dict[str, Any]], region: str
) -> list[dict[str, Any]]:
    """Records outside the scope whose phone is one of the selected records' phones.

    Dedupe merges every record of a phone into one contact; a group run that saw only its own
    record would send that record's fields and groups alone, and two groups holding duplicates
    would overwrite each other on every run.
    """
    if not others:
        return []

    def phone(row: Mapping[str, Any]) -> str | None:
        result = normalize_row(row, region)
        return result.phone if isinstance(result, Contact) else None

    phones = {p for p in map(phone, selected) if p}
    return [row for row in others if phone(row) in phones]


def extract(
    *,
    memberships: Mapping[str, Sequence[Membership]],
    contact_chunks: Callable[[Callable[[], None]], Iterable[list[dict[str, Any]]]],
    scope: SyncScope,
    last_sent_with: Callable[[set[str]], set[str]],
    region: str,
    stop: StopSignal,
) -> list[dict[str, Any]]:
    """From scratch (the reference the incremental path is tested against): the rows of the
    scope's groups, plus the records a group run must also see: those last
    sent with one of its groups (so a member who left loses the group in ErzyCall) and those
    sharing a phone with a member (so duplicates in other groups are merged, not overwritten).
    ``contact_chunks(check)`` streams the CRM and calls ``check`` between fetches.
    """
    extra: set[str] = set()
    if scope.groups is not None:
        group_ids = {
            gid for groups in memberships.values() for key, gid in groups
            if key in scope.groups and gid
        }
        extra = last_sent_with(group_ids)
    rows: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []  # a group run's out-of-scope rows, until phones are known
    for chunk in contact_chunks(stop.check):
        for row in chunk:
            (rows if in_scope(row, scope, extra) else others).append(row)
    return rows + same_phone_rows(rows, others, region)


#: Rows normalized between two looks at the stop signal (a few milliseconds of work).
STOP_CHECK_ROWS = 2000


def prepare(rows: list[dict[str, Any]], region: str, stop: StopSignal) -> Prepared:
    """From scratch: normalize every row (contact or reject) and merge contacts sharing a
    phone; every contact is to be planned."""
    normalized: list[Contact] = []
    rejects: list[Reject] = []
    for start in range(0, len(rows), STOP_CHECK_ROWS):
        stop.check()
        accepted, refused = normalize_rows(rows[start : start + STOP_CHECK_ROWS], region)
        normalized += accepted
        rejects += refused
    stop.check()
    contacts, merges, dedupe_rejects = dedupe(normalized)
    return Prepared(rejects, contacts, merges, dedupe_rejects, accepted=len(normalized))
