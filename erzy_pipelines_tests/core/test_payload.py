from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from erzy_pipelines.core import (
    Contact,
    changed_fields,
    create_body,
    idempotency_key,
    payload_hash,
    to_payload,
)

CONTACT = Contact(
    phone="+12025550123",
    title="Zo\u00eb \U0001f600",
    email="zoe@example.org",
    notes=None,
    tags=("VIP", "leads"),
    group_ids=("grp_a", "grp_b"),
    group_keys=("a", "b"),
    custom_fields=(("phone_extension", "9"), ("tier", "gold")),
    crm_ids=("17",),
    updated_at=None,
    warnings=("extension_moved_to_custom_field",),
)


def test_to_payload_has_every_field() -> None:
    assert to_payload(CONTACT) == {
        "title": "Zo\u00eb \U0001f600",
        "phone": "+12025550123",
        "email": "zoe@example.org",
        "notes": None,
        "tags": ["VIP", "leads"],
        "groupIds": ["grp_a", "grp_b"],
        "customFields": {"phone_extension": "9", "tier": "gold"},
    }


def test_create_body_drops_nones_only() -> None:
    body = create_body({"title": "A", "email": None, "notes": None, "tags": [], "customFields": {}})
    assert body == {"title": "A", "tags": [], "customFields": {}}


def test_payload_hash_is_canonical_sha256() -> None:
    payload = to_payload(CONTACT)
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert payload_hash(payload) == hashlib.sha256(canonical.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", payload_hash(payload))


def test_payload_hash_ignores_key_order_and_sees_every_change() -> None:
    payload = to_payload(CONTACT)
    assert payload_hash(dict(reversed(list(payload.items())))) == payload_hash(payload)
    variants = [
        {**payload, "title": "Zoe"},
        {**payload, "email": None},
        {**payload, "tags": ["leads", "VIP"]},  # order is part of the payload
        {**payload, "groupIds": ["grp_a"]},
        {**payload, "customFields": {"tier": "gold"}},
    ]
    hashes = {payload_hash(v) for v in variants} | {payload_hash(payload)}
    assert len(hashes) == len(variants) + 1


def test_payload_hash_known_value() -> None:
    # Pinned so a change to the canonical form (which would resend every contact) is deliberate.
    # sha256 of '{"a":null,"b":[1,"\u00e9"]}' (UTF-8, the e-acute not escaped)
    assert payload_hash({"b": [1, "\u00e9"], "a": None}) == (
        "f8f17faab95c024891d173fa43442b0e52007736a1f36715ac721ab22deeefc5"
    )


def test_payload_hash_never_raises_on_lone_surrogates() -> None:
    assert len(payload_hash({"title": "x\ud800"})) == 64


BASE: dict[str, Any] = {
    "title": "A",
    "phone": "+12025550123",
    "email": "a@x.com",
    "notes": "n",
    "tags": ["t1", "t2"],
    "groupIds": ["g1"],
    "customFields": {"k": "v"},
}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (BASE, dict(BASE), {}),
        (BASE, {**BASE, "title": "B"}, {"title": "B"}),
        (BASE, {**BASE, "email": None}, {"email": None}),  # clear an optional scalar
        (BASE, {**BASE, "tags": ["t2", "t1"]}, {"tags": ["t2", "t1"]}),  # lists compared exactly
        (BASE, {**BASE, "groupIds": []}, {"groupIds": []}),  # left its last group
        (BASE, {**BASE, "customFields": {"k": "v"}}, {}),  # dicts compare by content
        (
            BASE,
            {**BASE, "customFields": {"k": "w", "x": "1"}},
            {"customFields": {"k": "w", "x": "1"}},
        ),
        (
            BASE,
            {k: v for k, v in BASE.items() if k not in ("notes", "tags", "customFields")},
            {"notes": None, "tags": [], "customFields": {}},  # removed keys are cleared
        ),
        ({"title": "A"}, {"title": "A", "email": None}, {}),  # absent and null agree
        ({"title": "A"}, {"title": "A", "tags": []}, {"tags": []}),
        ({"title": "A", "email": None}, {"title": "A"}, {}),
        ({}, BASE, {k: v for k, v in BASE.items()}),
    ],
)
def test_changed_fields(old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any]) -> None:
    assert changed_fields(old, new) == expected


def test_idempotency_key_shape_and_privacy() -> None:
    key = idempotency_key("create", "+12025550123", 3, "ab" * 32)
    digest = hashlib.sha256(b"+12025550123").hexdigest()[:16]
    assert key == f"erzy-create-{digest}-3-{'ab' * 8}"
    assert "2025550123" not in key


def test_a_scoped_key_names_the_state_that_issued_it() -> None:
    from erzy_pipelines.core.payload import scoped_key

    key = idempotency_key("create", "+12025550123", 1, "ab" * 32)
    mine, theirs = scoped_key(key, "0123456789abcdef"), scoped_key(key, "fedcba9876543210")
    assert mine == "erzy-0123456789abcdef-" + key.removeprefix("erzy-")
    assert mine != theirs and len(mine) <= 128


def test_idempotency_key_properties() -> None:
    h_a, h_b = payload_hash({"title": "A"}), payload_hash({"title": "B"})
    phone = "+12025550123"
    # A -> B -> A: each is a new intent with the next sequence number: three distinct keys
    keys = [
        idempotency_key("update", phone, 4, h_a),
        idempotency_key("update", phone, 5, h_b),
        idempotency_key("update", phone, 6, h_a),
    ]
    assert len(set(keys)) == 3
    # action, phone and the body sent are part of the identity: another body under a reused
    # sequence number never replays the first body's response
    assert idempotency_key("create", phone, 4, h_a) != keys[0]
    assert idempotency_key("update", phone, 4, h_b) != keys[0]
    assert idempotency_key("update", "+12025550124", 4, h_a) != keys[0]
