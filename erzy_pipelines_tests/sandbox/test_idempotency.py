"""Idempotency-Key: replays answer the original result without writing; a new body is 409."""

from __future__ import annotations

import time

import httpx

from erzy_pipelines.sandbox import SandboxServer

from .conftest import StartSandbox
from .helpers import api, contact_body


def test_create_replay_returns_original_and_writes_once(
    client: httpx.Client, srv: SandboxServer
) -> None:
    headers = {"Idempotency-Key": "create-1"}
    first = client.post("/contacts", json=contact_body(1), headers=headers)
    # Key order and whitespace do not make a different body.
    again = client.post(
        "/contacts",
        content=b'{ "phone": "+14155550001",  "title": "Person 1" }',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(srv.contacts()) == 1
    assert srv.stats()["writes"] == 1
    assert srv.stats()["replays"] == 1


def test_reused_key_with_another_body_is_a_mismatch(
    client: httpx.Client, srv: SandboxServer
) -> None:
    headers = {"Idempotency-Key": "k"}
    assert client.post("/contacts", json=contact_body(1), headers=headers).status_code == 201
    resp = client.post("/contacts", json=contact_body(2), headers=headers)
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "IDEMPOTENCY_MISMATCH"
    assert [c["phone"] for c in srv.contacts()] == ["+14155550001"]


def test_patch_and_delete_honour_the_key(client: httpx.Client, srv: SandboxServer) -> None:
    cid = client.post("/contacts", json=contact_body()).json()["data"]["id"]
    patch = client.patch(f"/contacts/{cid}", json={"notes": "v1"}, headers={"Idempotency-Key": "p"})
    # Someone else changes the contact; the replay still answers the original snapshot.
    client.patch(f"/contacts/{cid}", json={"notes": "v2"})
    replay = client.patch(
        f"/contacts/{cid}", json={"notes": "v1"}, headers={"Idempotency-Key": "p"}
    )
    assert replay.json() == patch.json()
    assert client.get(f"/contacts/{cid}").json()["data"]["notes"] == "v2"  # no second write
    mismatch = client.patch(
        f"/contacts/{cid}", json={"notes": "v3"}, headers={"Idempotency-Key": "p"}
    )
    assert mismatch.json()["error"]["code"] == "IDEMPOTENCY_MISMATCH"

    assert client.delete(f"/contacts/{cid}", headers={"Idempotency-Key": "d"}).status_code == 204
    assert client.delete(f"/contacts/{cid}", headers={"Idempotency-Key": "d"}).status_code == 204
    assert client.delete(f"/contacts/{cid}").status_code == 404


def test_keys_are_scoped_and_failures_are_not_kept(
    client: httpx.Client, srv: SandboxServer
) -> None:
    # A 4xx is not remembered: after fixing nothing but retrying, the request is judged again.
    bad = contact_body(1, phone="nope")
    assert client.post("/contacts", json=bad, headers={"Idempotency-Key": "x"}).status_code == 400
    ok = client.post("/contacts", json=contact_body(1), headers={"Idempotency-Key": "x"})
    assert ok.status_code == 201
    # The same key on another path or from another API key is a different record.
    cid = ok.json()["data"]["id"]
    patched = client.patch(
        f"/contacts/{cid}", json={"notes": "n"}, headers={"Idempotency-Key": "x"}
    )
    assert patched.status_code == 200
    assert "Idempotent-Replayed" not in patched.headers
    srv.add_key("ek_test_other")
    with api(srv, "ek_test_other") as other:
        resp = other.post("/contacts", json=contact_body(2), headers={"Idempotency-Key": "x"})
    assert resp.status_code == 201
    assert len(srv.contacts()) == 2


def test_keys_expire_after_the_ttl(start_sandbox: StartSandbox) -> None:
    srv = start_sandbox(idempotency_ttl=0.05)
    with api(srv) as c:
        headers = {"Idempotency-Key": "short"}
        first = c.post("/contacts", json=contact_body(1), headers=headers).json()["data"]["id"]
        c.delete(f"/contacts/{first}")
        time.sleep(0.1)
        again = c.post("/contacts", json=contact_body(1), headers=headers)
    assert again.status_code == 201
    assert again.json()["data"]["id"] != first
    assert "Idempotent-Replayed" not in again.headers


def test_bad_idempotency_key(client: httpx.Client) -> None:
    resp = client.post("/contacts", json=contact_body(), headers={"Idempotency-Key": "k" * 256})
    assert resp.status_code == 400
    assert resp.json()["error"]["details"][0]["field"] == "Idempotency-Key"
