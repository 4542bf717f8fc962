"""What the sync owns on a contact, so that what ErzyCall's users add survives its writes.

Agents tag contacts ("callback"), put them in campaign groups and fill custom fields in the
ErzyCall dashboard. PATCH replaces ``tags``, ``groupIds`` and ``customFields`` whole, so a sync
that sent the CRM's lists as they are would wipe that work. In **merge** mode (the default) the
sync owns only what it sends:

- ``tags``: the tags it sent last time and the ones it sends now (compared case-insensitively).
- ``groupIds``: the ErzyCall groups that appear in the memberships mapping (``managed_groups``),
  and the groups it sent last time (a group that left the CRM altogether is still removed).
- ``customFields``: the keys it sent last time and the ones it sends now.
- ``title`` and ``phone``; ``email`` and ``notes`` when the CRM has a value, or when the sync set
  them before — a CRM ``NULL`` never clears a value the sync never set.

Everything else found in ErzyCall is kept. A PATCH that touches one of the three lists
therefore needs the contact's current value first (one GET, planned and counted like any
request). Lists stay within the API's limits: the CRM's values first, then what ErzyCall's
users added, up to 20 tags and 20 groups.

In **replace** mode the CRM is the only source of truth: the lists are sent as the CRM has
them, and no GET is needed (cheaper).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LIST_FIELDS = ("tags", "groupIds", "customFields")
OPTIONAL_SCALARS = ("email", "notes")
MAX_TAGS = 20
MAX_GROUPS = 20
MODES = ("merge", "replace")


def _folded(tags: Iterable[str]) -> set[str]:
    return {t.casefold() for t in tags}


def merge_tags(desired: list[str], last_sent: list[str], current: list[str]) -> list[str]:
    """The CRM's tags, then the tags ErzyCall's users added (neither sent now nor before)."""
    owned = _folded(desired) | _folded(last_sent)
    foreign = [t for t in current if t.casefold() not in owned]
    return (list(desired) + foreign)[:MAX_TAGS]


def merge_groups(
    desired: list[str], last_sent: list[str], current: list[str], managed: frozenset[str]
) -> list[str]:
    """The CRM's groups, then the groups the sync neither maps nor sent before."""
    owned = managed | set(last_sent) | set(desired)
    foreign = sorted(g for g in set(current) if g not in owned)
    return (sorted(desired) + foreign)[:MAX_GROUPS]


def merge_custom(
    desired: Mapping[str, Any], last_sent: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, Any]:
    """The CRM's custom fields, plus the fields the sync never sent."""
    foreign = {k: v for k, v in current.items() if k not in last_sent and k not in desired}
    return {**foreign, **desired}


@dataclass(frozen=True)
class Ownership:
    """How a sync writes the parts of a contact ErzyCall's users may also edit."""

    merge: bool = True
    managed_groups: frozenset[str] = frozenset()

    def needs_current(self, body: Mapping[str, Any]) -> bool:
        """Does sending ``body`` need the contact's current value first (one GET)?"""
        return self.merge and any(f in body for f in LIST_FIELDS)

    def merged(
        self,
        body: Mapping[str, Any],
        desired: Mapping[str, Any],
        last_sent: Mapping[str, Any] | None,
        current: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The PATCH body for ``body`` against what ErzyCall holds now: list fields merged,
        and only the fields whose value differs from ``current`` (may be empty)."""
        last = last_sent or {}
        out = dict(body)
        if not self.merge:
            return out
        if "tags" in out:
            out["tags"] = merge_tags(
                list(desired["tags"]), list(last.get("tags") or ()), list(current.get("tags") or ())
            )
        if "groupIds" in out:
            out["groupIds"] = merge_groups(
                list(desired["groupIds"]),
                list(last.get("groupIds") or ()),
                list(current.get("groupIds") or ()),
                self.managed_groups,
            )
        if "customFields" in out:
            out["customFields"] = merge_custom(
                desired["customFields"],
                last.get("customFields") or {},
                current.get("customFields") or {},
            )
        for name in OPTIONAL_SCALARS:
            if name in out and out[name] is None and last.get(name) is None:
                del out[name]  # never set by the sync: a CRM NULL does not clear it
        return {k: v for k, v in out.items() if not _same(k, current.get(k), v)}

    def adoption(self, desired: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
        """The PATCH body that adopts an existing contact (the sync never wrote to it)."""
        if not self.merge:
            return {k: v for k, v in desired.items() if not _same(k, current.get(k), v)}
        body = {k: v for k, v in desired.items() if k not in LIST_FIELDS and v is not None}
        body.update({k: desired[k] for k in LIST_FIELDS})
        return self.merged(body, desired, None, current)

    def owned_view(
        self, remote: Mapping[str, Any], last_sent: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """What of a remote contact the sync owns, shaped like a payload: a full resync diffs
        the CRM against this, so a value ErzyCall's users added is not drift."""
        if not self.merge:
            return dict(remote)
        last = last_sent or {}
        sent_tags = _folded(last.get("tags") or ())
        sent_custom = set(last.get("customFields") or {})
        view = dict(remote)
        view["tags"] = [t for t in remote.get("tags") or () if t.casefold() in sent_tags]
        owned = self.managed_groups | set(last.get("groupIds") or ())
        view["groupIds"] = sorted(g for g in remote.get("groupIds") or () if g in owned)
        view["customFields"] = {
            k: v for k, v in (remote.get("customFields") or {}).items() if k in sent_custom
        }
        for name in OPTIONAL_SCALARS:
            if last.get(name) is None:
                view[name] = None  # not the sync's to compare
        return view


def _same(field: str, current: Any, new: Any) -> bool:
    if field == "groupIds":
        return sorted(current or ()) == sorted(new or ())
    if field == "tags":
        return list(current or ()) == list(new or ())
    if field == "customFields":
        return dict(current or {}) == dict(new or {})
    return current == new


REPLACE = Ownership(merge=False)
"""The CRM is the only source of truth: what plain functions assume unless told otherwise."""
