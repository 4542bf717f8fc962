"""Keys and scopes: every 401 state, and 403 naming the missing scope."""

from __future__ import annotations

import time

import httpx
import pytest

from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxServer, key_hash

from .helpers import api, contact_body


def code_of(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["error"]["code"]


def test_missing_and_unknown_keys(srv: SandboxServer) -> None:
    with api(srv, key=None) as c:
        assert code_of(c.get("/contacts")) == (401, "UNAUTHORIZED")
    with api(srv, key="ek_test_nope") as c:
        resp = c.get("/contacts")
        assert code_of(resp) == (401, "UNAUTHORIZED")
        assert "ek_test_nope" not in resp.text
        assert "X-RateLimit-Remaining" in resp.headers


def test_expired_and_revoked_keys(srv: SandboxServer) -> None:
    srv.add_key("ek_test_old", ("*",))
    srv.add_key("ek_test_gone", ("*",))
    srv.add_key("ek_test_timed", ("*",), expires_at=time.time() - 1)
    with api(srv, "ek_test_old") as old, api(srv, "ek_test_gone") as gone:
        assert old.get("/contacts").status_code == 200
        srv.expire_key("ek_test_old")
        srv.revoke_key("ek_test_gone")
        assert code_of(old.get("/contacts")) == (401, "KEY_EXPIRED")
        assert code_of(gone.post("/contacts", json=contact_body())) == (401, "KEY_REVOKED")
    with api(srv, "ek_test_timed") as timed:
        assert code_of(timed.get("/contacts")) == (401, "KEY_EXPIRED")
    assert srv.contacts() == []
    with pytest.raises(KeyError) as info:
        srv.revoke_key("ek_test_secret_value")
    assert "ek_test_secret_value" not in str(info.value)


@pytest.mark.parametrize(
    ("scopes", "method", "path", "needed"),
    [
        (("contacts:read",), "POST", "/contacts", "contacts:write"),
        (("contacts:read",), "DELETE", "/contacts/contact_1", "contacts:write"),
        (("contacts:write",), "GET", "/contacts", "contacts:read"),
        (("contacts:write",), "GET", "/contacts/search?q=ab", "contacts:read"),
        (("contacts:read", "contacts:write"), "GET", "/contact-groups", "contact_groups:read"),
    ],
)
def test_missing_scope_is_403_naming_it(
    srv: SandboxServer, scopes: tuple[str, ...], method: str, path: str, needed: str
) -> None:
    srv.add_key("ek_test_scoped", scopes)
    with api(srv, "ek_test_scoped") as c:
        resp = c.request(method, path, json=contact_body() if method == "POST" else None)
    assert code_of(resp) == (403, "INSUFFICIENT_SCOPE")
    assert needed in resp.json()["error"]["message"]


def test_granted_scopes_work(srv: SandboxServer) -> None:
    srv.add_key("ek_test_rw", ("contacts:read", "contacts:write", "contact_groups:read"))
    with api(srv, "ek_test_rw") as c:
        assert c.post("/contacts", json=contact_body()).status_code == 201
        assert c.get("/contacts").status_code == 200
        assert c.get("/contact-groups").status_code == 200
    with pytest.raises(ValueError):
        srv.add_key("ek_test_typo", ("contact:read",))


def test_request_log_holds_key_hashes_not_keys(srv: SandboxServer) -> None:
    with api(srv) as c:
        c.get("/contacts", params={"limit": 5})
    (record,) = srv.request_log
    assert (record.method, record.path, record.status, record.query) == (
        "GET",
        "/api/v1/contacts",
        200,
        "limit=5",
    )
    assert record.key_hash == key_hash(DEMO_API_KEY)
    assert DEMO_API_KEY not in repr(record)
