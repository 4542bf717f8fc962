"""What goes in and out of the sandbox app, without sockets: requests, responses, the request log.

Kept apart from the routes so the HTTP server, the app and every route share one small vocabulary
(plus the JSON-body and cursor helpers all of them use) without importing each other.

Choices where the docs say [unknown]:

* ``cursor`` is the URL-safe base64 (unpadded) of the last id on the page; it never expires
  (deleted contacts leave tombstones). A malformed or unknown cursor is 400 ``VALIDATION_ERROR``
  on ``cursor``.
* A body that is empty, not UTF-8, not JSON, or uses ``NaN``/``Infinity`` is 400 ``INVALID_JSON``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .api_errors import ApiError, validation_error


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    raw_query: str = ""


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    lose: bool = False


@dataclass(frozen=True)
class RequestRecord:
    """One ``/api/v1`` request as the server saw it. ``key_hash`` never reveals the key."""

    method: str
    path: str
    status: int
    at: float
    key_hash: str | None
    query: str = ""
    lost: bool = False
    idempotency_key: str | None = None
    body: str = ""  # the request body as sent, so tests can check what a PATCH carried


def error_response(exc: ApiError) -> Response:
    return Response(exc.status, exc.body(), dict(exc.headers))


def encode_cursor(item_id: str) -> str:
    return base64.urlsafe_b64encode(item_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_cursor() from None


def bad_cursor() -> ApiError:
    return validation_error([{"field": "cursor", "message": "invalid or unknown cursor"}])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, "INVALID_JSON", "Request body is empty; send a JSON object.")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "INVALID_JSON", "Request body is not valid JSON.") from None


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
