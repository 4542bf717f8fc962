"""The Contacts reference page's curl examples, run as written against the sandbox.

Only the host and the example key are swapped (``https://app.erzycall.com/api/v1`` → the sandbox,
``ek_live_abc123`` → the demo key); the command lines are copied verbatim from
shared/reference/erzycall-contacts-api-page.txt.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from typing import Any

import pytest

from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxServer
from erzy_pipelines_tests.conftest import IN_CI


@pytest.fixture(autouse=True)
def _curl_installed() -> None:
    """Without curl these tests cannot run: skipped locally, a failure with CI=true."""
    if shutil.which("curl") is None:
        if IN_CI:
            pytest.fail("curl is not installed (CI=true: the documented examples must run)")
        pytest.skip("curl is not installed")


LIST = """curl -X GET "https://app.erzycall.com/api/v1/contacts?limit=20&tags=vip" \\
  -H "X-API-Key: ek_live_abc123"
"""
SEARCH = """curl -X GET "https://app.erzycall.com/api/v1/contacts/search?q=john&limit=5" \\
  -H "X-API-Key: ek_live_abc123"
"""
CREATE = """curl -X POST "https://app.erzycall.com/api/v1/contacts" \\
  -H "X-API-Key: ek_live_abc123" \\
  -H "Content-Type: application/json" \\
  -H "Idempotency-Key: create-contact-john" \\
  -d '{
    "title": "John Doe",
    "phone": "+14155551234",
    "email": "john@example.com",
    "tags": ["vip"],
    "customFields": {"company": "Acme Inc"}
  }'
"""
GET = """curl -X GET "https://app.erzycall.com/api/v1/contacts/contact_456" \\
  -H "X-API-Key: ek_live_abc123"
"""
PATCH = """curl -X PATCH "https://app.erzycall.com/api/v1/contacts/contact_456" \\
  -H "X-API-Key: ek_live_abc123" \\
  -H "Content-Type: application/json" \\
  -d '{"tags": ["vip", "enterprise"], "notes": "Updated notes"}'
"""
DELETE = """curl -X DELETE "https://app.erzycall.com/api/v1/contacts/contact_456" \\
  -H "X-API-Key: ek_live_abc123"
"""


def run_curl(srv: SandboxServer, command: str, **replace: str) -> tuple[int, Any]:
    """Run a documented command line; return (HTTP status, parsed JSON body or None)."""
    command = command.replace("https://app.erzycall.com/api/v1", srv.base_url)
    command = command.replace("ek_live_abc123", DEMO_API_KEY)
    for old, new in replace.items():
        command = command.replace(old, new)
    argv = shlex.split(command.replace("\\\n", " "))
    argv += ["-sS", "--max-time", "10", "-w", "\n%{http_code}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), (json.loads(body) if body else None)


def test_create_list_search_and_duplicate_phone(srv: SandboxServer) -> None:
    status, created = run_curl(srv, CREATE)
    assert status == 201
    john = created["data"]
    assert john["id"].startswith("contact_")
    assert {k: john[k] for k in ("title", "phone", "email", "tags", "customFields")} == {
        "title": "John Doe",
        "phone": "+14155551234",
        "email": "john@example.com",
        "tags": ["vip"],
        "customFields": {"company": "Acme Inc"},
    }

    # Same Idempotency-Key, same body: the original answer again, no second contact.
    assert run_curl(srv, CREATE) == (201, created)
    # A new key for the same phone is a real second create: 409 CONFLICT.
    status, conflict = run_curl(srv, CREATE, **{"create-contact-john": "create-contact-john-2"})
    assert status == 409
    assert conflict["error"]["code"] == "CONFLICT"
    assert len(srv.contacts()) == 1

    status, listed = run_curl(srv, LIST)
    assert status == 200
    assert [c["id"] for c in listed["data"]] == [john["id"]]
    assert listed["pagination"]["hasMore"] is False
    assert listed["pagination"]["pageSize"] == 20

    status, found = run_curl(srv, SEARCH)
    assert status == 200
    assert [c["phone"] for c in found["data"]] == ["+14155551234"]


def test_get_patch_delete_the_documented_contact(srv: SandboxServer) -> None:
    srv.add_contact_direct(
        {
            "id": "contact_456",
            "title": "John Doe",
            "phone": "+14155551234",
            "email": "john@example.com",
            "tags": ["vip"],  # the PATCH below sets ["vip", "enterprise"]
            "createdAt": "2025-01-10T08:00:00Z",
        }
    )
    status, got = run_curl(srv, GET)
    assert status == 200
    assert got["data"]["id"] == "contact_456"
    assert got["data"]["createdAt"] == "2025-01-10T08:00:00Z"
    assert got["data"]["tags"] == ["vip"]

    status, patched = run_curl(srv, PATCH)
    assert status == 200
    assert patched["data"]["tags"] == ["vip", "enterprise"]
    assert patched["data"]["notes"] == "Updated notes"
    assert patched["data"]["email"] == "john@example.com"  # fields not sent are kept
    assert run_curl(srv, GET) == (200, patched), "the PATCH was answered but not stored"

    assert run_curl(srv, DELETE) == (204, None)
    status, missing = run_curl(srv, GET)
    assert status == 404
    assert missing["error"]["code"] == "NOT_FOUND"
    assert srv.contacts() == []
