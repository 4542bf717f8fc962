"""The client against the real sandbox server over HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
import socket

import pytest

from erzy_pipelines.core.budget import RateWindow
from erzy_pipelines.erzycall import (
    ErzyCallClient,
    RateLimiter,
    RetryPolicy,
    errors,
)
from erzy_pipelines.sandbox import DEMO_API_KEY, DEMO_GROUPS


def make(sandbox, key: str = DEMO_API_KEY, **kw) -> ErzyCallClient:
    # Generous limiter and tiny backoff: these tests are about behaviour, not pacing.
    kw.setdefault("retry", RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05))
    kw.setdefault("timeout", 5.0)
    return ErzyCallClient(key, sandbox.base_url, limiter=RateLimiter((RateWindow(10_000, 60.0),)),
                          **kw)


@pytest.fixture
def client(sandbox):
    with make(sandbox) as c:
        yield c


def create(client: ErzyCallClient, n: int, title: str = "Person", prefix: str = "+1415555") -> list:
    return [
        client.create_contact({"title": f"{title} {i}", "phone": f"{prefix}{i:04d}"},
                              idempotency_key=f"create-{prefix}-{i}")
        for i in range(n)
    ]


def test_crud_round_trip(client, sandbox):
    created = client.create_contact(
        {"title": "Ada Lovelace", "phone": "+14155551234", "email": "ada@example.com",
         "notes": "first", "tags": ["vip"], "groupIds": ["grp_vip"],
         "customFields": {"crm_id": "42"}},
        idempotency_key="c-ada",
    )
    assert created.id.startswith("contact_") and created.group_ids == ("grp_vip",)
    assert client.last_attempts == 1
    assert client.get_contact(created.id) == created

    # Only the fields sent change; null clears an optional scalar.
    updated = client.update_contact(created.id, {"notes": "second", "email": None}, "u-ada-1")
    assert updated.notes == "second" and updated.email is None
    assert (updated.title, updated.phone, updated.tags, updated.group_ids, updated.custom_fields) \
        == (created.title, created.phone, created.tags, created.group_ids, created.custom_fields)
    assert client.get_contact(created.id) == updated

    # tags/groupIds replace the whole value.
    regrouped = client.update_contact(created.id, {"groupIds": ["grp_trial"], "tags": []}, "u-2")
    assert regrouped.group_ids == ("grp_trial",) and regrouped.tags == ()

    client.delete_contact(created.id, idempotency_key="d-ada")
    with pytest.raises(errors.NotFoundError) as info:
        client.get_contact(created.id)
    assert info.value.attempts == 1
    assert sandbox.contacts() == []
    assert client.requests_sent == 7


def test_pagination_over_several_pages(client):
    made = create(client, 8)
    before = client.requests_sent
    listed = list(client.list_contacts(limit=3))
    assert [c.id for c in listed] == [c.id for c in made]  # creation order, each once
    assert client.requests_sent - before == 3

    pages = list(client.list_contact_pages(limit=3))
    assert [len(p.items) for p in pages] == [3, 3, 2]
    assert [p.has_more for p in pages] == [True, True, False]
    # The last page also carries a cursor: stopping relied on hasMore, not on a null cursor.
    assert pages[-1].cursor is not None


def test_filters_stay_fixed_across_pages(client):
    for i in range(5):
        tags = ["vip"] if i % 2 == 0 else ["other"]
        client.create_contact({"title": f"T{i}", "phone": f"+1212555{i:04d}", "tags": tags},
                              idempotency_key=f"t{i}")
    vip = list(client.list_contacts(limit=1, tags=["vip"]))
    assert [c.title for c in vip] == ["T0", "T2", "T4"]


def test_search_and_exact_phone_lookup(client):
    client.create_contact({"title": "Grace Hopper", "phone": "+141555512345"}, "s1")
    target = client.create_contact({"title": "Alan Turing", "phone": "+14155551234"}, "s2")
    client.create_contact({"title": "Other", "phone": "+1415555123"}, "s3")

    found = client.search_contacts("hopper")
    assert [c.title for c in found] == ["Grace Hopper"]

    # "+14155551234" is a substring of "+141555512345": only the exact phone may come back.
    assert client.find_contact_by_phone("+14155551234") == target
    assert client.find_contact_by_phone("+1415555123").title == "Other"
    assert client.find_contact_by_phone("+14155550000") is None


def test_exact_lookup_pages_past_substring_matches(client):
    # 5 contacts whose phone contains the target, the exact one created last, limit 100 pages.
    for i in range(5):
        client.create_contact({"title": f"S{i}", "phone": f"+1999888777{i}"}, f"sub{i}")
    exact = client.create_contact({"title": "Exact", "phone": "+1999888777"}, "exact")
    assert client.find_contact_by_phone("+1999888777") == exact


def test_list_contact_groups(client):
    groups = [(g.id, g.name) for g in client.list_contact_groups()]
    assert groups == list(DEMO_GROUPS)  # every preloaded group, once, in order
    assert client.last_attempts == 1


def test_idempotent_replay_and_mismatch(client, sandbox):
    payload = {"title": "Once", "phone": "+33612345678"}
    first = client.create_contact(payload, "same-key")
    again = client.create_contact(dict(payload), "same-key")
    assert again.id == first.id and len(sandbox.contacts()) == 1
    with pytest.raises(errors.IdempotencyMismatchError) as info:
        client.create_contact({"title": "Changed", "phone": "+33612345678"}, "same-key")
    assert not info.value.retryable and info.value.attempts == 1


def test_server_errors_map_to_the_hierarchy(client, sandbox):
    client.create_contact({"title": "Dup", "phone": "+4915112345678"}, "dup-1")
    with pytest.raises(errors.ConflictError) as conflict:
        client.create_contact({"title": "Dup 2", "phone": "+4915112345678"}, "dup-2")
    assert conflict.value.code == "CONFLICT" and conflict.value.status == 409

    with pytest.raises(errors.ValidationError) as invalid:
        client.create_contact({"title": "Bad", "phone": "0151 123"}, "bad-1")
    assert any(d["field"] == "phone" for d in invalid.value.details)

    with pytest.raises(errors.ValidationError):
        client.create_contact({"title": "G", "phone": "+4915100000001", "groupIds": ["grp_no"]},
                              "bad-2")
    with pytest.raises(errors.NotFoundError):
        client.update_contact("contact_ffffffff", {"title": "x"}, "nf-1")


def test_key_problems_are_fatal_for_the_run(sandbox):
    with make(sandbox, key="ek_test_not_a_real_key") as bad, \
            pytest.raises(errors.AuthenticationError) as info:
        bad.get_contact("contact_1")
    assert info.value.fatal_for_run and info.value.code == "UNAUTHORIZED"
    assert "ek_test_not_a_real_key" not in str(info.value)

    sandbox.add_key("ek_test_read_only_key", ("contacts:read",))
    with make(sandbox, key="ek_test_read_only_key") as ro:
        assert list(ro.list_contacts()) == []
        with pytest.raises(errors.PermissionDeniedError) as denied:
            ro.create_contact({"title": "x", "phone": "+14155550001"}, "ro-1")
    assert denied.value.fatal_for_run and denied.value.code == "INSUFFICIENT_SCOPE"

    sandbox.add_key("ek_test_soon_revoked", ("*",))
    with make(sandbox, key="ek_test_soon_revoked") as doomed:
        doomed.list_contact_groups()
        sandbox.revoke_key("ek_test_soon_revoked")
        with pytest.raises(errors.AuthenticationError) as revoked:
            doomed.list_contact_groups()
    assert revoked.value.code == "KEY_REVOKED" and revoked.value.attempts == 1


def test_every_response_lost_never_duplicates(client, sandbox):
    """Every write's response is lost (replays too): N creates, each retried, leave N contacts."""
    n = 5
    retry = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.02)
    sandbox.faults.lose_response_rate = 1.0
    with make(sandbox, retry=retry) as lossy:
        for i in range(n):
            with pytest.raises(errors.TransportError) as info:
                lossy.create_contact({"title": f"L{i}", "phone": f"+4420794600{i:02d}"}, f"l-{i}")
            assert info.value.attempts == 4 and lossy.last_attempts == 4
        assert lossy.requests_sent == n * 4
    stats = sandbox.stats()
    assert stats["writes"] == n and stats["replays"] == n * 3
    assert len(sandbox.contacts()) == n
    # Every attempt of one create carried the same Idempotency-Key: the server replayed, never
    # wrote twice. Once responses flow again, the same calls return the stored contacts.
    sandbox.faults.lose_response_rate = 0.0
    ids = {client.create_contact({"title": f"L{i}", "phone": f"+4420794600{i:02d}"}, f"l-{i}").id
           for i in range(n)}
    assert ids == {c["id"] for c in sandbox.contacts()} and len(sandbox.contacts()) == n


def test_half_the_responses_lost_every_create_succeeds_once(client, sandbox):
    n = 12
    sandbox.faults.lose_response_rate = 0.5  # seeded: the same losses on every run
    made = create(client, n, prefix="+3491555")
    assert len({c.id for c in made}) == n
    assert sorted(c["id"] for c in sandbox.contacts()) == sorted(c.id for c in made)
    stats = sandbox.stats()
    assert stats["lost_responses"] > 0 and stats["writes"] == n
    assert client.requests_sent == n + stats["lost_responses"]

    # Deletes whose responses are lost still end with the contacts gone, without errors.
    for c in made:
        client.delete_contact(c.id, idempotency_key=f"del-{c.id}")
    assert sandbox.contacts() == []


def test_server_errors_and_latency_are_retried(client, sandbox):
    create(client, 4)
    sandbox.faults.error_rate = 0.5  # seeded, so the same requests fail on every run
    for _ in range(5):
        assert len(list(client.list_contacts(limit=2))) == 4
    by_status = sandbox.stats()["by_status"]
    assert by_status[500] > 0 and client.requests_sent == 4 + 10 + by_status[500]
    sandbox.faults.error_rate = 0.0

    slow = create(client, 1, prefix="+3361234")[0]
    sandbox.faults.latency = 0.5
    impatient = make(sandbox, timeout=0.2, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    with impatient, pytest.raises(errors.TransportError) as info:
        impatient.get_contact(slow.id)
    assert info.value.attempts == 2 and "timed out" in str(info.value)
    assert impatient.requests_sent == 2


def test_a_private_key_never_reaches_a_log_line(sandbox, caplog):
    caplog.set_level(logging.DEBUG)  # every logger: ours, httpx, httpcore, the sandbox's
    key = "ek_live_private_key_value_never_logged"
    sandbox.add_key(key, ("*",))
    sandbox.faults.lose_response_rate = 0.5
    with make(sandbox, key=key) as client:
        made = client.create_contact({"title": "Log", "phone": "+14155550123"}, "log-1")
        client.update_contact(made.id, {"notes": "n"}, "log-2")
        client.find_contact_by_phone("+14155550123")
        with pytest.raises(errors.ValidationError) as info:
            client.create_contact({"title": "", "phone": "+14155550124"}, "log-3")
        assert key not in repr(client)
    assert key not in str(info.value) and key not in repr(info.value)
    messages = [r.getMessage() for r in caplog.records]
    assert any("GET /contacts" in m for m in messages)
    assert not [m for m in messages if key in m]
    # Phones are masked everywhere, httpx's URL log line included.
    assert not [m for m in messages if "4155550123" in m]
    assert any("+1415*****23" in m for m in messages)


def test_connection_refused_is_a_retryable_transport_error():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ErzyCallClient(DEMO_API_KEY, f"http://127.0.0.1:{port}/api/v1",
                            retry=RetryPolicy(max_attempts=3, base_delay=0.01))
    with client, pytest.raises(errors.TransportError) as info:
        client.list_contact_groups()
    assert info.value.attempts == 3 and info.value.retryable
    assert client.requests_sent == 0
