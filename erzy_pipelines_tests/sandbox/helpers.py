"""Small helpers shared by the sandbox tests."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxServer

# Building an SSL context costs ~40 ms per client; the sandbox is plain HTTP, so share one.
_TLS = ssl.create_default_context()


def api(srv: SandboxServer, key: str | None = DEMO_API_KEY) -> httpx.Client:
    """An httpx client for ``srv``'s API, sending ``key`` (none when ``None``)."""
    headers = {"X-API-Key": key} if key is not None else {}
    return httpx.Client(base_url=srv.base_url, headers=headers, timeout=10.0, verify=_TLS)


def contact_body(n: int = 1, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"title": f"Person {n}", "phone": f"+1415555{n:04d}"}
    body.update(fields)
    return body
