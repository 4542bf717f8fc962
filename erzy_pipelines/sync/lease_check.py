"""Deciding, once a run holds a contact's lease, what of its planned operation is still to send.

A plan is made before any lease is taken, so by the time a run holds a contact another run may
have sent it, or sent it from a newer CRM read. The sender (``send.py``) asks
:func:`checked_under_lease` right after each claim and sends only what it returns.
"""

from __future__ import annotations

from typing import Any

from erzy_pipelines.core.ownership import Ownership
from erzy_pipelines.core.plan import Action, ContactState, Operation, plan_contact


def checked_under_lease(
    store: Any,
    op: Operation,
    ownership: Ownership,
    reconciled: bool,
    read_started: float | None = None,
) -> Operation | None:
    """The operation to send now that this run holds the contact's lease, or None (nothing to
    send). A write from a CRM read older than the one ErzyCall's value came from is never sent
    (another run read the CRM later and confirmed a newer value). Otherwise a write planned from
    a full listing stands as it is; anything else is planned again (and a deletion checked)."""
    current = store.load_states([op.contact.phone]).get(op.contact.phone)
    if (
        read_started is not None
        and current is not None
        and current.source_read_at is not None
        and read_started < current.source_read_at
    ):
        return None
    if reconciled and op.action is not Action.DELETE:
        return op
    return replan_under_lease(current, op, ownership)


def replan_under_lease(
    current: ContactState | None, op: Operation, ownership: Ownership
) -> Operation | None:
    """Plan the contact again against its state (``current``) as it is now that this run holds
    its lease.

    Concurrent runs (a group backfill next to the daily sync) plan from the same state. Another
    run may have sent this contact since: the fresh plan sends only what is still missing,
    diffed against what was really sent last, under a key of its own — or nothing (``None``).
    """
    if op.action is Action.DELETE:  # still the contact, as it was, this run planned to remove?
        unchanged = current is not None and (current.remote_id, current.last_payload) == (
            op.remote_id,
            op.last_sent,
        )
        return op if unchanged else None
    fresh = plan_contact(op.contact, current, ownership, source_fp=op.source_fp)
    if fresh is None or fresh.action is Action.SKIP_REJECTED:
        return None
    return fresh
