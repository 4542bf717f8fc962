from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from erzy_pipelines.core import (
    Action,
    Contact,
    ContactState,
    create_body,
    idempotency_key,
    payload_hash,
    plan_operations,
    to_payload,
)
from erzy_pipelines.core.plan import plan_contact


def mk(phone: str = "+12025550123", **fields: Any) -> Contact:
    base: dict[str, Any] = {
        "phone": phone,
        "title": "Ann",
        "email": "ann@x.com",
        "notes": None,
        "tags": ("vip",),
        "group_ids": ("g1",),
        "group_keys": ("k1",),
        "custom_fields": (),
        "crm_ids": ("c1",),
        "updated_at": None,
    }
    base.update(fields)
    return Contact(**base)


C = mk()
P = to_payload(C)
H = payload_hash(P)


def synced(contact: Contact = C, **fields: Any) -> ContactState:
    """State after a confirmed sync of ``contact``."""
    payload = to_payload(contact)
    base: dict[str, Any] = {
        "phone": contact.phone,
        "remote_id": "contact_1",
        "last_payload": payload,
        "last_hash": payload_hash(payload),
        "last_outcome": "created",
        "intent_seq": 3,
    }
    base.update(fields)
    return ContactState(**base)


def test_new_contact_is_created() -> None:
    op = plan_contact(C, None)
    assert op is not None
    assert (op.action, op.remote_id, op.intent_seq) == (Action.CREATE, None, 1)
    assert op.body == create_body(P) and "notes" not in op.body
    assert (op.payload, op.payload_hash) == (P, H)
    assert op.idempotency_key == idempotency_key("create", C.phone, 1, payload_hash(op.body))


def test_known_phone_without_remote_id_is_created_with_next_seq() -> None:
    op = plan_contact(C, ContactState(phone=C.phone, intent_seq=2))
    assert op is not None and (op.action, op.intent_seq) == (Action.CREATE, 3)


def test_unchanged() -> None:
    assert plan_contact(C, synced()) is None


def test_changed_contact_sends_only_changed_fields() -> None:
    changed = replace(C, title="Ann Lee", group_ids=())  # left group g1: must lose it
    op = plan_contact(changed, synced())
    assert op is not None
    assert (op.action, op.remote_id) == (Action.UPDATE, "contact_1")
    assert op.body == {"title": "Ann Lee", "groupIds": []}
    assert op.payload == to_payload(changed)
    assert op.intent_seq == 4
    assert op.idempotency_key == idempotency_key("update", C.phone, 4, payload_hash(op.body))


def test_update_without_last_payload_sends_everything() -> None:
    op = plan_contact(replace(C, title="B"), synced(last_payload=None))
    assert op is not None and op.body == to_payload(replace(C, title="B"))
    assert op.body["notes"] is None  # explicit null clears whatever is there


def test_hash_differs_but_diff_empty_is_unchanged() -> None:
    state = synced(last_hash="stale")
    assert plan_contact(C, state) is None


def test_rejected_payload_is_skipped_until_it_changes() -> None:
    bad = replace(C, title="Rejected")
    state = synced(rejected_hash=payload_hash(to_payload(bad)))
    op = plan_contact(bad, state)
    assert op is not None and op.action is Action.SKIP_REJECTED
    assert (op.body, op.idempotency_key) == ({}, "")
    fixed = plan_contact(replace(C, title="Fixed"), state)
    assert fixed is not None and fixed.action is Action.UPDATE


def test_rejected_create_is_skipped_too() -> None:
    state = ContactState(phone=C.phone, rejected_hash=H, intent_seq=1)
    op = plan_contact(C, state)
    assert op is not None and op.action is Action.SKIP_REJECTED


@pytest.mark.parametrize("action_state", ["create", "update"])
def test_pending_intent_reuses_its_key(action_state: str) -> None:
    changed = replace(C, title="New")
    h = payload_hash(to_payload(changed))
    state = synced(pending_hash=h, intent_seq=7)
    if action_state == "create":
        state = ContactState(phone=C.phone, pending_hash=h, intent_seq=7)
    op = plan_contact(changed, state)
    assert op is not None and op.action.value == action_state
    # the pending sequence number is reused (not 8), so a retry of the same body replays
    assert op.intent_seq == 7 and op.idempotency_key.split("-")[3] == "7"


def test_a_b_a_gives_three_keys() -> None:
    a, b = C, replace(C, title="B")
    state = synced(a, intent_seq=1)
    keys = []
    for target in (b, a, b):
        op = plan_contact(target, state)
        assert op is not None and op.action is Action.UPDATE
        keys.append(op.idempotency_key)
        # the write succeeded: the state now holds the target
        state = synced(target, intent_seq=op.intent_seq)
    assert len(set(keys)) == 3
    assert [k.split("-")[3] for k in keys] == ["2", "3", "4"]


def test_plan_operations_ordering_and_counts() -> None:
    phones = [f"+1202555010{i}" for i in range(8)]
    contacts = [mk(p, crm_ids=(f"c{i}",)) for i, p in enumerate(phones)]
    states = {
        phones[0]: synced(contacts[0]),  # unchanged
        phones[1]: synced(contacts[1], last_hash="x", last_payload={}),  # update
        phones[2]: synced(contacts[2], last_hash="x", last_payload={}, deferred=True),
        phones[3]: ContactState(phone=phones[3], failure_count=2),  # failed create
        phones[4]: synced(
            contacts[4], last_hash="x", rejected_hash=payload_hash(to_payload(contacts[4]))
        ),
        # phones[5], [6], [7]: new
    }
    plan = plan_operations(list(reversed(contacts)), states)
    assert [(op.contact.phone, op.action) for op in plan.operations] == [
        (phones[2], Action.UPDATE),  # deferred and failed first, by phone
        (phones[3], Action.CREATE),
        (phones[1], Action.UPDATE),
        (phones[5], Action.CREATE),
        (phones[6], Action.CREATE),
        (phones[7], Action.CREATE),
    ]
    assert plan.unchanged == [contacts[0]]
    assert [op.contact for op in plan.skipped] == [contacts[4]]
    assert plan.requests_needed == 6


def test_rerun_after_sync_needs_no_requests() -> None:
    contacts = [mk(f"+1202555010{i}") for i in range(5)]
    first = plan_operations(contacts, {})
    assert first.requests_needed == 5
    states = {op.contact.phone: synced(op.contact) for op in first.operations}
    second = plan_operations(contacts, states)
    assert (second.requests_needed, second.operations, len(second.unchanged)) == (0, [], 5)
