"""The Contacts API's behaviour the sync relies on, as one contract run against two targets:

- ``sandbox``: the local sandbox (always; ``make test``);
- ``erzycall``: the real API, only with ``ERZYCALL_CONTRACT_API_KEY`` set to an ``ek_test_`` key
  (and optionally ``ERZYCALL_CONTRACT_BASE_URL``); ``make contract`` runs it. Without the key it
  is skipped, with the reason shown.

Against the real API the contract creates contacts only with fictional phone numbers
(+1 202 555 01xx) and a tag naming the run, and deletes every contact it created — and, at the
end, any contact still carrying its tag — so an account's real contacts are never touched.
If both stay green, the sandbox still matches the API.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxConfig, SandboxServer
from erzy_pipelines.settings import REAL_API_BASE_URL

pytestmark = pytest.mark.contract
KEY = os.environ.get("ERZYCALL_CONTRACT_API_KEY", "")
BASE_URL = os.environ.get("ERZYCALL_CONTRACT_BASE_URL", REAL_API_BASE_URL)
NO_KEY = "set ERZYCALL_CONTRACT_API_KEY to an ek_test_ key to run the contract against ErzyCall"


@dataclass
class Target:
    http: httpx.Client
    tag: str
    created: list[str] = field(default_factory=list)
    _phones: set[str] = field(default_factory=set)

    def phone(self) -> str:
        """A fictional, unused E.164 number (555-01xx is reserved for fiction)."""
        while True:
            candidate = f"+1202555{random.randint(100, 199):04d}"
            if candidate not in self._phones:
                self._phones.add(candidate)
                return candidate

    def create(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        body = {**body, "tags": [*body.get("tags", []), self.tag]}
        resp = self.http.post(
            "/contacts", json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex}
        )
        if resp.status_code == 201 and resp.json()["data"]["id"] not in self.created:
            self.created.append(resp.json()["data"]["id"])
        return resp

    def patch(self, contact_id: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.patch(
            f"/contacts/{contact_id}", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )

    def cleanup(self) -> None:
        for contact_id in self.created:
            self.http.delete(f"/contacts/{contact_id}")
        for leftover in self.http.get("/contacts", params={"tags": self.tag}).json()["data"]:
            self.http.delete(f"/contacts/{leftover['id']}")


@pytest.fixture(
    params=[
        "sandbox",
        pytest.param(
            "erzycall", marks=pytest.mark.skipif(not KEY.startswith("ek_test_"), reason=NO_KEY)
        ),
    ]
)
def api(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "sandbox":
        server = SandboxServer(SandboxConfig(limits=((10_000, 60.0), (100_000, 3600.0)))).start()
        base_url, key = server.base_url, DEMO_API_KEY
    else:
        server = None
        base_url, key = BASE_URL, KEY
    target = Target(
        httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30),
        tag=f"erzy-contract-{uuid.uuid4().hex[:8]}",
    )
    try:
        yield target
    finally:
        target.cleanup()
        target.http.close()
        if server is not None:
            server.stop()


def _code(resp: httpx.Response) -> str:
    return resp.json()["error"]["code"]


def test_create_then_get(api: Target) -> None:
    phone = api.phone()
    resp = api.create({"title": "Contract Ann", "phone": phone, "email": "ann@example.com"})
    assert resp.status_code == 201
    created = resp.json()["data"]
    assert created["phone"] == phone and created["title"] == "Contract Ann" and created["id"]
    got = api.http.get(f"/contacts/{created['id']}")
    assert got.status_code == 200 and got.json()["data"]["email"] == "ann@example.com"


def test_a_replay_with_the_same_key_writes_once(api: Target) -> None:
    body, key = {"title": "Contract Replay", "phone": api.phone()}, uuid.uuid4().hex
    first, second = api.create(body, key), api.create(body, key)
    assert first.status_code == 201 and second.status_code in (200, 201)
    assert second.json()["data"]["id"] == first.json()["data"]["id"]
    found = api.http.get("/contacts", params={"search": body["phone"]}).json()["data"]
    assert [c["id"] for c in found if c["phone"] == body["phone"]] == [first.json()["data"]["id"]]


def test_a_key_reused_with_another_body_is_a_mismatch(api: Target) -> None:
    key = uuid.uuid4().hex
    assert api.create({"title": "Contract One", "phone": api.phone()}, key).status_code == 201
    again = api.create({"title": "Contract Two", "phone": api.phone()}, key)
    assert again.status_code == 409 and _code(again) == "IDEMPOTENCY_MISMATCH"


def test_a_second_contact_with_a_phone_is_a_conflict(api: Target) -> None:
    phone = api.phone()
    assert api.create({"title": "Contract First", "phone": phone}).status_code == 201
    second = api.create({"title": "Contract Second", "phone": phone})
    assert second.status_code == 409 and _code(second) == "CONFLICT"


def test_patch_changes_only_what_it_sends_and_replaces_lists_whole(api: Target) -> None:
    contact = api.create(
        {"title": "Contract Lists", "phone": api.phone(), "tags": ["a", "b"],
         "customFields": {"one": "1", "two": "2"}}
    ).json()["data"]
    patched = api.patch(contact["id"], {"tags": ["c", api.tag], "customFields": {"three": "3"}})
    assert patched.status_code == 200
    data = patched.json()["data"]
    assert data["tags"] == ["c", api.tag] and data["customFields"] == {"three": "3"}
    renamed = api.patch(contact["id"], {"title": "Contract Renamed"}).json()["data"]
    assert renamed["tags"] == ["c", api.tag] and renamed["title"] == "Contract Renamed"


def test_a_deleted_contact_answers_404_not_found(api: Target) -> None:
    contact = api.create({"title": "Contract Gone", "phone": api.phone()}).json()["data"]
    assert api.http.delete(f"/contacts/{contact['id']}").status_code == 204
    for resp in (api.http.get(f"/contacts/{contact['id']}"),
                 api.patch(contact["id"], {"title": "x"})):
        assert resp.status_code == 404 and _code(resp) == "NOT_FOUND"


def test_pagination_walks_a_tagged_set_once(api: Target) -> None:
    ids = {api.create({"title": f"Contract Page {n}", "phone": api.phone()}).json()["data"]["id"]
           for n in range(3)}
    seen: list[str] = []
    params: dict[str, Any] = {"tags": api.tag, "limit": 2}
    for _ in range(10):
        body = api.http.get("/contacts", params=params).json()
        seen += [c["id"] for c in body["data"]]
        if not body["pagination"]["hasMore"]:
            break
        params["cursor"] = body["pagination"]["cursor"]
    assert sorted(seen) == sorted(ids)


def test_every_response_carries_the_rate_limit_headers(api: Target) -> None:
    resp = api.http.get("/contacts", params={"limit": 1})
    assert resp.status_code == 200
    for header in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        assert resp.headers.get(header, "").replace(".", "").isdigit(), header
