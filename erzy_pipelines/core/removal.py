"""Opt-in removal from ErzyCall of the contacts the sync created whose CRM records are gone.

A contact is removable when the sync created it itself (``created_by_sync``: never one it
adopted on 409, recorded by ``baseline``, or found already there), ErzyCall still holds it (a
stored id), no CRM record read this run has its phone, and none of the CRM records it was made
from is read this run any more (deleted, or no longer selected by the contacts query). Only a
run over the whole CRM can know that: group runs never remove anything.

Two guards stop a mistake (an emptied table, a broken query) from emptying ErzyCall: more than
``max_per_run`` removable contacts, or more than ``max_share`` of the contacts the sync holds in
ErzyCall, and the run removes **nothing** and says why. Each removal is one DELETE request,
planned, budgeted and audited like any write (``Action.DELETE``).
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
    created: Iterable[tuple[ContactState, list[str]]], synced: int, removal: Removal
) -> tuple[list[Operation], str | None]:
    """(the deletions, or none and why): ``created`` are the contacts the sync created that
    ErzyCall holds, with their CRM ids; ``synced`` how many contacts the sync holds there."""
    gone = [
        plan_deletion(state, crm_ids)
        for state, crm_ids in created
        if state.phone not in removal.present_phones
        and removal.present_crm_ids.isdisjoint(crm_ids)
    ]
    gone.sort(key=lambda op: op.contact.phone)
    if len(gone) > removal.max_per_run:
        return [], (
            f"{len(gone)} contacts the sync created have no CRM record any more: more than the "
            f"{removal.max_per_run} a run may delete, so nothing was deleted. If that many records "
            "really left the CRM, raise the limit for one run; otherwise check the contacts query"
        )
    if gone and len(gone) > removal.max_share * synced:
        return [], (
            f"{len(gone)} of the {synced} contacts the sync holds in ErzyCall "
            f"({len(gone) / max(synced, 1):.1%}) have no CRM record any more: more than the "
            f"{removal.max_share:.0%} a run may delete, so nothing was deleted. Check the "
            "contacts query, or raise the share for one run"
        )
    return gone, None
