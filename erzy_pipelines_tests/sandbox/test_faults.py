"""Injected faults: lost responses after commit, forced 429 bursts, 500s and latency."""

from __future__ import annotations

import time

import httpx
import pytest

from erzy_pipelines.sandbox import Faults, SandboxServer

from .conftest import StartSandbox
from .helpers import api, contact_body


def test_lost_response_leaves_the_write_committed(client: httpx.Client, srv: SandboxServer) -> None:
    srv.faults.lose_response_rate = 1.0
    headers = {"Idempotency-Key": "create-lost"}
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/contacts", json=contact_body(), headers=headers)
    (stored,) = srv.contacts()
    assert stored["phone"] == contact_body()["phone"]
    assert client.get("/contacts").status_code == 200  # reads are never lost

    srv.faults.lose_response_rate = 0.0
    retry = client.post("/contacts", json=contact_body(), headers=headers)
    assert retry.status_code == 201
    assert retry.json()["data"] == stored  # the replay names the contact the lost call created
    assert len(srv.contacts()) == 1
    stats = srv.stats()
    assert (stats["writes"], stats["lost_responses"], stats["replays"]) == (1, 1, 1)
    assert [(r.lost, r.idempotency_key) for r in srv.request_log] == [
        (True, "create-lost"),
        (False, None),
        (False, "create-lost"),
    ]


def test_lost_patch_and_delete(client: httpx.Client, srv: SandboxServer) -> None:
    cid = client.post("/contacts", json=contact_body()).json()["data"]["id"]
    srv.faults.lose_response_rate = 1.0
    with pytest.raises(httpx.RemoteProtocolError):
        client.patch(f"/contacts/{cid}", json={"notes": "kept"})
    assert srv.contacts()[0]["notes"] == "kept"
    with pytest.raises(httpx.RemoteProtocolError):
        client.delete(f"/contacts/{cid}")
    assert srv.contacts() == []


def test_burst_429(start_sandbox: StartSandbox) -> None:
    srv = start_sandbox(limits=((5, 60.0),))
    srv.faults.burst_429 = 2
    with api(srv) as c:
        for _ in range(2):
            resp = c.post("/contacts", json=contact_body())
            assert resp.status_code == 429
            assert resp.json()["error"]["code"] == "RATE_LIMITED"
            assert resp.headers["Retry-After"] == "1"
            assert resp.headers["X-RateLimit-Remaining"] == "0"
        ok = c.post("/contacts", json=contact_body())
    assert ok.status_code == 201
    assert ok.headers["X-RateLimit-Remaining"] == "4"  # the burst did not spend the window
    assert srv.faults.burst_429 == 0
    assert srv.stats()["rate_limited"] == 2


def test_error_rate_one_fails_before_any_write(client: httpx.Client, srv: SandboxServer) -> None:
    srv.faults.error_rate = 1.0
    resp = client.post("/contacts", json=contact_body(), headers={"Idempotency-Key": "e"})
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "INTERNAL_ERROR"
    assert "X-RateLimit-Remaining" in resp.headers
    assert srv.contacts() == []
    srv.faults.error_rate = 0.0
    # Nothing was remembered for the key: the retry is a fresh create, not a replay.
    retry = client.post("/contacts", json=contact_body(), headers={"Idempotency-Key": "e"})
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry.headers


def test_error_rate_is_seeded_and_reproducible(start_sandbox: StartSandbox) -> None:
    def statuses(seed: int) -> list[int]:
        srv = start_sandbox(seed=seed, limits=((1000, 60.0),))
        srv.faults.error_rate = 0.5
        with api(srv) as c:
            return [c.get("/contacts").status_code for _ in range(20)]

    first = statuses(7)
    assert first == statuses(7)
    assert set(first) == {200, 500}


def test_latency(client: httpx.Client, srv: SandboxServer) -> None:
    srv.faults.latency = 0.3
    started = time.perf_counter()
    assert client.get("/contacts").status_code == 200
    assert time.perf_counter() - started >= 0.3
    srv.faults.latency_rate = 0.0
    started = time.perf_counter()
    assert client.get("/contacts").status_code == 200
    assert time.perf_counter() - started < 0.3


def test_faults_validation_and_replacement(srv: SandboxServer) -> None:
    with pytest.raises(ValueError):
        srv.faults.update({"error_rate": 2})
    with pytest.raises(ValueError):
        srv.faults.update({"nonsense": 1})
    srv.faults = Faults(burst_429=1)
    with api(srv) as c:
        assert c.get("/contacts").status_code == 429
        assert c.get("/contacts").status_code == 200
