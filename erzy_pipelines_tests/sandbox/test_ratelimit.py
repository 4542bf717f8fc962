"""Sliding windows per key: 429 + Retry-After, headers on every response, 429s not counted."""

from __future__ import annotations

import time

import pytest

from erzy_pipelines.core.budget import parse_rate_limits as parse_limits
from erzy_pipelines.sandbox import SandboxConfig

from .conftest import StartSandbox
from .helpers import api, contact_body


def test_window_fills_then_frees(start_sandbox: StartSandbox) -> None:
    srv = start_sandbox(limits=((5, 1.0),))
    with api(srv) as c:
        remaining = []
        for _ in range(5):
            resp = c.get("/contacts")
            assert resp.status_code == 200
            assert resp.headers["X-RateLimit-Limit"] == "5"
            assert int(resp.headers["X-RateLimit-Reset"]) >= int(time.time())
            remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
        assert remaining == [4, 3, 2, 1, 0]

        limited = c.post("/contacts", json=contact_body())
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "RATE_LIMITED"
        assert limited.headers["Retry-After"] == "1"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        # Refused requests do not count: a second refusal changes nothing.
        assert c.get("/contacts").status_code == 429
        assert srv.contacts() == []

        time.sleep(float(limited.headers["Retry-After"]) + 0.05)
        resp = c.get("/contacts")
        assert resp.status_code == 200
        assert resp.headers["X-RateLimit-Remaining"] == "4"
    stats = srv.stats()
    assert stats["rate_limited"] == 2
    assert stats["by_status"] == {200: 6, 429: 2}


def test_headers_describe_the_tightest_window(start_sandbox: StartSandbox) -> None:
    srv = start_sandbox(limits=((10, 60.0), (3, 3600.0)))
    with api(srv) as c:
        first = c.get("/contacts")
        assert (first.headers["X-RateLimit-Limit"], first.headers["X-RateLimit-Remaining"]) == (
            "3",
            "2",
        )
        c.get("/contacts")
        c.get("/contacts")
        limited = c.get("/contacts")
    assert limited.status_code == 429
    # The hour window is the full one: the wait is most of an hour, not a minute.
    assert 3500 <= int(limited.headers["Retry-After"]) <= 3600
    assert limited.headers["X-RateLimit-Limit"] == "3"


def test_windows_are_per_key_and_errors_carry_headers(start_sandbox: StartSandbox) -> None:
    srv = start_sandbox(limits=((2, 60.0),))
    srv.add_key("ek_test_second")
    with api(srv) as c, api(srv, "ek_test_second") as other:
        assert c.get("/contacts/contact_nope").status_code == 404
        assert c.get("/contacts/bad-id").headers["X-RateLimit-Remaining"] == "0"
        assert c.get("/contacts").status_code == 429
        assert other.get("/contacts").status_code == 200


def test_default_limits_and_runtime_changes(start_sandbox: StartSandbox) -> None:
    assert SandboxConfig().limits == ((60, 60.0), (1000, 3600.0))
    srv = start_sandbox()
    with api(srv) as c:
        resp = c.get("/contacts")
        assert (resp.headers["X-RateLimit-Limit"], resp.headers["X-RateLimit-Remaining"]) == (
            "60",
            "59",
        )
        srv.set_limits(((2, 60.0),))
        assert c.get("/contacts").headers["X-RateLimit-Remaining"] == "0"
        assert c.get("/contacts").status_code == 429
        srv.reset_limits()
        assert c.get("/contacts").status_code == 200


def test_admin_endpoints_are_not_limited(start_sandbox: StartSandbox) -> None:
    srv = start_sandbox(limits=((1, 60.0),))
    with api(srv) as c:
        c.get("/contacts")
        assert c.get("/contacts").status_code == 429
        for _ in range(3):
            resp = c.get(srv.url + "/_sandbox/stats")
            assert resp.status_code == 200
            assert "X-RateLimit-Limit" not in resp.headers


def test_parse_limits() -> None:
    assert parse_limits("60/60,1000/3600") == ((60, 60.0), (1000, 3600.0))
    assert parse_limits(" 5/1 ") == ((5, 1.0),)
    for bad in ("", "60", "0/60", "a/b", "5/0"):
        with pytest.raises(ValueError):
            parse_limits(bad)
