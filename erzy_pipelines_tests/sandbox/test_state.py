"""Persistence across restarts, opted-out contacts, admin HTTP endpoints and clean shutdown."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from erzy_pipelines.sandbox import (
    DEMO_API_KEY,
    DEMO_GROUPS,
    SandboxConfig,
    SandboxServer,
)

from .conftest import StartSandbox
from .helpers import api, contact_body


def test_db_path_keeps_contacts_and_idempotency_across_restart(
    start_sandbox: StartSandbox, tmp_path: Path
) -> None:
    db = str(tmp_path / "sandbox.sqlite")
    first = start_sandbox(db_path=db)
    with api(first) as c:
        created = c.post("/contacts", json=contact_body(1), headers={"Idempotency-Key": "k1"})
        c.post("/contacts", json=contact_body(2))
        page = c.get("/contacts", params={"limit": 1}).json()
    first.stop()

    second = start_sandbox(db_path=db)
    assert len(second.contacts()) == 2
    with api(second) as c:
        cid = created.json()["data"]["id"]
        assert c.get(f"/contacts/{cid}").json() == created.json()
        replay = c.post("/contacts", json=contact_body(1), headers={"Idempotency-Key": "k1"})
        assert replay.json() == created.json()
        assert c.post("/contacts", json=contact_body(2)).status_code == 409
        rest = c.get("/contacts", params={"limit": 1, "cursor": page["pagination"]["cursor"]})
        assert [x["phone"] for x in rest.json()["data"]] == [contact_body(2)["phone"]]
        groups = c.get("/contact-groups").json()["data"]
    assert [g["id"] for g in groups] == [g for g, _ in DEMO_GROUPS]


def test_in_memory_by_default(start_sandbox: StartSandbox) -> None:
    first = start_sandbox()
    with api(first) as c:
        c.post("/contacts", json=contact_body())
    first.stop()
    assert start_sandbox().contacts() == []


def test_opted_out_flag_survives_patch_and_recreate(
    client: httpx.Client, srv: SandboxServer
) -> None:
    stored = srv.add_contact_direct({**contact_body(1), "optedOut": True})
    assert stored["optedOut"] is True
    cid = stored["id"]
    patched = client.patch(f"/contacts/{cid}", json={"title": "New name", "tags": ["x"]})
    assert patched.json()["data"]["optedOut"] is True
    refused = client.patch(f"/contacts/{cid}", json={"optedOut": False})
    assert refused.status_code == 400
    assert refused.json()["error"]["details"][0]["field"] == "optedOut"
    assert client.get(f"/contacts/{cid}").json()["data"]["optedOut"] is True
    assert client.post("/contacts", json=contact_body(1)).status_code == 409
    listed = client.get("/contacts").json()["data"]
    assert [c["optedOut"] for c in listed] == [True]

    # The opt-out belongs to the number: deleting and re-creating does not get around it.
    assert client.delete(f"/contacts/{cid}").status_code == 204
    again = client.post("/contacts", json=contact_body(1))
    assert again.status_code == 201
    assert again.json()["data"]["optedOut"] is True

    with pytest.raises(ValueError):
        srv.add_contact_direct(contact_body(1))


def test_admin_endpoints(client: httpx.Client, srv: SandboxServer) -> None:
    admin = srv.url + "/_sandbox"
    client.post("/contacts", json=contact_body())
    client.get("/contacts/contact_0")

    stats = client.get(f"{admin}/stats").json()
    assert stats["requests"] == 2
    assert stats["writes"] == 1
    assert stats["by_status"] == {"201": 1, "404": 1}

    contacts = client.get(f"{admin}/contacts").json()["data"]
    assert contacts == srv.contacts()

    faults = client.post(f"{admin}/faults", json={"burst_429": 1, "latency": 0.0})
    assert faults.status_code == 200
    assert faults.json()["burst_429"] == 1
    assert srv.faults.burst_429 == 1
    assert client.get(f"{admin}/faults").json() == faults.json()
    assert client.get("/contacts").status_code == 429
    bad = client.post(f"{admin}/faults", json={"error_rate": "lots"})
    assert bad.status_code == 400
    assert client.post(f"{admin}/faults", json={"bogus": 1}).status_code == 400

    reset = client.post(f"{admin}/reset-stats")
    assert reset.status_code == 200
    assert reset.json()["requests"] == 0
    assert srv.stats()["by_status"] == {}
    assert srv.request_log == []
    assert client.get(f"{admin}/nope").status_code == 404


def test_defaults_bind_localhost_and_expose_the_demo_key() -> None:
    cfg = SandboxConfig()
    assert (cfg.host, cfg.db_path, cfg.groups) == ("127.0.0.1", None, DEMO_GROUPS)
    assert list(cfg.keys) == [DEMO_API_KEY]
    assert cfg.keys[DEMO_API_KEY].scopes == ("*",)
    assert DEMO_API_KEY == "ek_test_sandbox_demo_key_0001"


def test_stop_closes_socket_and_open_connections() -> None:
    srv = SandboxServer(port=0).start()
    assert srv.base_url.startswith("http://127.0.0.1:")
    port = srv.port
    with api(srv) as c:
        assert c.get("/contacts").status_code == 200  # leaves an idle keep-alive connection
        srv.stop()
        with pytest.raises(httpx.TransportError):
            c.get("/contacts")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    srv.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError):
        srv.start()


def test_keep_alive_reuses_one_connection(client: httpx.Client, srv: SandboxServer) -> None:
    ports = set()
    for _ in range(3):
        resp = client.get("/contacts")
        ports.add(resp.extensions["network_stream"].get_extra_info("client_addr"))
    assert len(ports) == 1


def test_concurrent_creates_of_one_phone_make_one_contact(srv: SandboxServer) -> None:
    def create(args: tuple[int, str]) -> httpx.Response:
        n, key = args
        with api(srv) as c:
            return c.post("/contacts", json=contact_body(n), headers={"Idempotency-Key": key})

    with ThreadPoolExecutor(max_workers=8) as pool:
        distinct_keys = list(pool.map(create, [(1, f"k{i}") for i in range(8)]))
        shared_key = list(pool.map(create, [(2, "shared")] * 8))
    assert sorted(r.status_code for r in distinct_keys) == [201] + [409] * 7
    assert {r.status_code for r in shared_key} == {201}
    assert len({r.json()["data"]["id"] for r in shared_key}) == 1
    assert len(srv.contacts()) == 2
    assert srv.stats()["writes"] == 2


@pytest.mark.parametrize("started_with_ctrl_c_ignored", [False, True])
def test_serve_forever_prints_url_and_key_and_stops_on_ctrl_c(started_with_ctrl_c_ignored) -> None:
    """Also when started with SIGINT ignored (``nohup``, ``&`` in a script, a test runner that
    ignores it): the printed "Ctrl-C to stop" must hold."""
    code = (
        "from erzy_pipelines.sandbox import SandboxConfig, serve_forever\n"
        "serve_forever(SandboxConfig(port=0))\n"
    )

    def ignore_ctrl_c() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=ignore_ctrl_c if started_with_ctrl_c_ignored else None,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/api/v1", first)
        assert url, first
        assert DEMO_API_KEY in proc.stdout.readline()
        resp = httpx.get(url.group(0) + "/contacts", headers={"X-API-Key": DEMO_API_KEY})
        assert resp.status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0  # generous: the suite runs dev servers meanwhile
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
