"""Opt-in removal from ErzyCall of the contacts the sync created whose CRM records are gone.

A contact is removable when the sync created it itself (``created_by_sync``: never one it
adopted on 409, recorded by ``baseline``, or found already there), ErzyCall still holds it (a
stored id), no CRM record read this run has its phone, and none of the CRM records it was made
from is read this run any more (deleted, or no longer selected by the contacts query). Only a
run over the whole CRM can know that: group runs never remove anything.

Three guards stop a mistake (an emptied table, a broken query) from emptying ErzyCall; any one
refuses the whole removal (the run deletes **nothing** and says why):

- **A collapsed read**: the CRM read returned no record at all, or more than ``max_share``
  fewer records than the last whole-CRM read that was not itself collapsed
  (``erzy_sync_runs.crm_records``): a collapsed read never becomes the yardstick, so a query
  that stays broken keeps deleting nothing.
- **Too many**: more than ``max_per_run`` removable contacts.
- **Too large a share**: more than ``max_share`` of the contacts the sync *created* (the only
  ones removal can touch; contacts it adopted or recorded with ``baseline`` do not dilute it).

Each removal is one DELETE request, planned, budgeted and audited like any write
(``Action.DELETE``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from erzy_pipelines.core.normalize import Contact
from erzy_pipelines.core.payload import idempotency_key
from erzy_pipelines.core.plan import Action, ContactState, Operation

DELETE_HASH = "deleted"
"""The pending hash of a deletion intent: a retried DELETE reuses its sequence and key."""


@dataclass(frozen=True)
class Removal:
    """The removal settings of a whole-CRM run, and what the run read."""

    present_phones: frozenset[str]  # phones of the CRM records read this run
    present_crm_ids: frozenset[str]  # ids of the CRM records read this run (rejects included)
    max_per_run: int = 100
    max_share: float = 0.05
    # When the run began reading the CRM: a contact another run wrote since then may stem
    # from a record this run did not see; it is left for the next run to judge.
    before: datetime | None = None
    # Records the last whole-CRM read returned that was not itself judged collapsed (None: no
    # such read yet): what this read is compared with.
    last_read: int | None = None


def read_collapsed(read: int, last_read: int | None, max_share: float) -> str | None:
    """Why a whole-CRM read of ``read`` records looks broken rather than real, or None: no
    record at all, or more than ``max_share`` fewer than the last read that was not collapsed."""
    if read == 0:
        return (
            "the CRM read returned no record at all (an emptied table or a query that selects "
            "nothing), so nothing was deleted"
        )
    if last_read and read < (1 - max_share) * last_read:
        return (
            f"the CRM read returned {read} records, {last_read - read} fewer than the {last_read} "
            f"of the last read ({(last_read - read) / last_read:.1%}): more than the "
            f"{max_share:.0%} that may vanish at once, so the read is taken as broken and nothing "
            "was deleted. Check the contacts query; if that many records really left, raise "
            "ERZY_MAX_DELETION_SHARE for one run"
        )
    return None


def plan_deletion(state: ContactState, crm_ids: Iterable[str]) -> Operation:
    """The DELETE of one contact the sync created (its CRM ids kept for the audit)."""
    assert state.remote_id is not None
    seq = state.intent_seq if state.pending_hash == DELETE_HASH else state.intent_seq + 1
    contact = Contact(
        phone=state.phone,
        title=state.phone,
        email=None,
        notes=None,
        tags=(),
        group_ids=(),
        group_keys=(),
        custom_fields=(),
        crm_ids=tuple(sorted(crm_ids)),
        updated_at=None,
    )
    key = idempotency_key("delete", state.phone, seq, DELETE_HASH)
    return Operation(
        Action.DELETE, contact, {}, {}, DELETE_HASH, state.remote_id, seq, key, state.last_payload
    )


def plan_removals(
    created: Iterable[tuple[ContactState, list[str]]], created_total: int, removal: Removal
) -> tuple[list[Operation], str | None]:
    """(the deletions, or none and why): ``created`` are the contacts the sync created that
    ErzyCall holds (last written before the read began), with their CRM ids; ``created_total``
    how many contacts the sync created that ErzyCall holds, in all."""
    gone = [
        plan_deletion(state, crm_ids)
        for state, crm_ids in created
        if state.phone not in removal.present_phones
        and removal.present_crm_ids.isdisjoint(crm_ids)
    ]
    gone.sort(key=lambda op: op.contact.phone)
    read = len(removal.present_crm_ids)
    if gone and (why := read_collapsed(read, removal.last_read, removal.max_share)):
        return [], why
    if len(gone) > removal.max_per_run:
        return [], (
            f"{len(gone)} contacts the sync created have no CRM record any more: more than the "
            f"{removal.max_per_run} a run may delete, so nothing was deleted. If that many records "
            "really left the CRM, raise the limit for one run; otherwise check the contacts query"
        )
    if gone and len(gone) > removal.max_share * created_total:
        return [], (
            f"{len(gone)} of the {created_total} contacts the sync created in ErzyCall "
            f"({len(gone) / max(created_total, 1):.1%}) have no CRM record any more: more than "
            f"the {removal.max_share:.0%} a run may delete, so nothing was deleted. Check the "
            "contacts query, or raise the share for one run"
        )
    return gone, None
