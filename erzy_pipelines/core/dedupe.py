"""One contact per E.164 phone, because the ErzyCall API allows only one.

Rules:

- Records sharing a phone are ordered most recent first: ``updated_at`` descending (None is
  oldest); ties broken by the smallest crm_id in natural order ("c2" < "c10"), so the result
  never depends on input order. The first is the survivor.
- title, email, notes: the survivor's; a missing value (None, or a title that is only the
  ``title_from_phone`` fallback) is filled from the next most recent record that has one.
- tags: union in survivor-first order, de-duplicated case-insensitively, cut to 20
  (``tags_truncated``).
- group_ids, group_keys: union, sorted. A union of more than 20 group ids rejects every record
  of that phone with ``too_many_groups`` (sending a subset would break "groupIds = all mapped
  CRM groups").
- custom_fields: merged; the more recent record wins per key.
- crm_ids: every record's, survivor first; updated_at: the survivor's; warnings: the union in
  order, with ``title_from_phone`` kept only if the merged title is still the phone.
- A ``Merge`` row is emitted for every non-survivor crm_id. A crm_id repeated within one phone
  is counted once.
- Output contacts, merges and rejects are sorted by phone. Grouping is one pass over a dict;
  a phone with a single record is passed through untouched (the common case stays cheap).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

from erzy_pipelines.core.normalize import GROUPS_MAX, Contact, Reject, pick_tags

_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True, slots=True)
class Merge:
    """``merged_crm_id`` was folded into the contact of ``survivor_crm_id`` for ``phone``."""

    phone: str
    survivor_crm_id: str
    merged_crm_id: str


def natural_key(crm_id: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort key that orders digit runs by value: "c2" < "c10"; the raw id breaks ties."""
    if crm_id.isdigit() and crm_id.isascii():  # the common case, without the regex
        return ((0, int(crm_id), ""),), crm_id
    parts = tuple(
        (0, int(part), "") if part.isdigit() and part.isascii() else (1, 0, part)
        for part in _DIGITS.split(crm_id)
        if part
    )
    return parts, crm_id


_OLDEST = (False, dt.datetime.min.replace(tzinfo=dt.UTC))


def _recency(c: Contact) -> tuple[bool, dt.datetime]:
    if not c.updated_at:
        return _OLDEST
    try:
        moment = dt.datetime.fromisoformat(c.updated_at)
    except ValueError:
        return _OLDEST
    return True, moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def survivor_order(records: Iterable[Contact]) -> list[Contact]:
    """Most recent first (None oldest), then natural crm_id order."""
    by_id = sorted(records, key=lambda c: natural_key(c.crm_ids[0] if c.crm_ids else ""))
    by_id.sort(key=_recency, reverse=True)  # stable: equal recency keeps crm_id order
    return by_id


def dedupe(contacts: Iterable[Contact]) -> tuple[list[Contact], list[Merge], list[Reject]]:
    """Collapse contacts sharing a phone; returns (contacts, merges, rejects), each by phone."""
    groups: dict[str, list[Contact]] = {}
    for contact in contacts:
        group = groups.get(contact.phone)
        if group is None:
            groups[contact.phone] = [contact]
        else:
            group.append(contact)

    out: list[Contact] = []
    merges: list[Merge] = []
    rejects: list[Reject] = []
    for phone in sorted(groups):
        group = groups[phone]
        if len(group) == 1:
            out.append(group[0])
            continue
        merged = _merge(phone, survivor_order(group))
        if isinstance(merged, list):
            rejects.extend(merged)
            continue
        out.append(merged)
        survivor = merged.crm_ids[0]
        merges.extend(Merge(phone, survivor, crm_id) for crm_id in merged.crm_ids[1:])
    return out, merges, rejects


def _merge(phone: str, ordered: list[Contact]) -> Contact | list[Reject]:
    crm_ids: dict[str, None] = {}
    group_ids: set[str] = set()
    group_keys: set[str] = set()
    warnings: dict[str, None] = {}
    title = email = notes = None
    for c in ordered:  # most recent first: the first value found wins
        crm_ids.update(dict.fromkeys(c.crm_ids))
        group_ids.update(c.group_ids)
        group_keys.update(c.group_keys)
        warnings.update(dict.fromkeys(c.warnings))
        if title is None and "title_from_phone" not in c.warnings:
            title = c.title
        email = email if email is not None else c.email
        notes = notes if notes is not None else c.notes
    if len(group_ids) > GROUPS_MAX:
        detail = (
            f"{len(crm_ids)} records share this phone and together are in {len(group_ids)} "
            f"ErzyCall groups; the API holds at most {GROUPS_MAX}"
        )
        return [Reject(cid, "too_many_groups", detail, phone) for cid in crm_ids]

    tags, _, tags_cut = pick_tags((t for c in ordered for t in c.tags), clean=False)
    custom: dict[str, str] = {}
    for c in reversed(ordered):  # oldest first, so the more recent record overwrites
        custom.update(c.custom_fields)
    if title is not None:
        warnings.pop("title_from_phone", None)
    if tags_cut:
        warnings["tags_truncated"] = None

    return Contact(
        phone=phone,
        title=title if title is not None else ordered[0].title,
        email=email,
        notes=notes,
        tags=tags,
        group_ids=tuple(sorted(group_ids)),
        group_keys=tuple(sorted(group_keys)),
        custom_fields=tuple(sorted(custom.items())),
        crm_ids=tuple(crm_ids),
        updated_at=ordered[0].updated_at,
        warnings=tuple(warnings),
    )


def duplicate_phones(contacts: Iterable[Contact]) -> list[str]:
    """Phones held by more than one contact: what the blocking check looks for."""
    seen: set[str] = set()
    doubled: set[str] = set()
    for contact in contacts:
        (doubled if contact.phone in seen else seen).add(contact.phone)
    return sorted(doubled)
