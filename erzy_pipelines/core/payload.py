"""API payloads, their hashes, PATCH diffs and idempotency keys.

Rules:

- ``to_payload``: every field, always (``email``/``notes`` may be None), so two payloads can be
  compared key by key; tags keep their order, groupIds sorted, customFields a dict.
- ``create_body``: the payload without None values (POST needs no explicit nulls).
- ``payload_hash``: sha256 hex of ``json.dumps(sort_keys=True, separators=(",", ":"),
  ensure_ascii=False)`` encoded as UTF-8: stable across runs, processes and Python versions.
- ``changed_fields(old, new)``: keys present in either whose value differs (lists compared
  exactly: ``to_payload`` is deterministic, so a reordering is a real change); a key missing from
  ``new`` is cleared: None for a scalar, [] for a list, {} for an object (PATCH replaces lists and
  objects whole and a null clears an optional scalar).
- ``idempotency_key(action, phone, seq, body_hash)`` = ``erzy-<action>-<sha256(phone)[:16]>-
  <seq>-<body_hash[:16]>``: no raw phone in a header or log; the same intent retried gets the
  same key (the server replays instead of writing twice); a new intent gets a new ``seq`` so it
  never collides with an old one (A -> B -> A gives three keys). ``plan`` passes the hash of the
  body actually sent, because the API compares bodies: one key with two bodies is a 409
  IDEMPOTENCY_MISMATCH.
- ``scoped_key(key, account_id)`` = ``erzy-<account id>-<action>-...``: what is sent. The
  account id is drawn at random when a state database first registers an ErzyCall account
  (``sync/accounts.py``), so a second deployment on the same key, or this one after its state was
  lost, never sends a key another state sent (its sequence numbers start at 1 again): its creates
  meet the existing phone's 409 and adopt it, instead of being answered as replays of writes
  another state made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from erzy_pipelines.core.normalize import Contact

PAYLOAD_FIELDS = ("title", "phone", "email", "notes", "tags", "groupIds", "customFields")


def to_payload(contact: Contact) -> dict[str, Any]:
    """The full desired state of one contact, shaped like the API's create/update body."""
    return {
        "title": contact.title,
        "phone": contact.phone,
        "email": contact.email,
        "notes": contact.notes,
        "tags": list(contact.tags),
        "groupIds": list(contact.group_ids),
        "customFields": dict(contact.custom_fields),
    }


def create_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """POST body: the payload minus None values."""
    return {k: v for k, v in payload.items() if v is not None}


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_hash(payload: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON (UTF-8; lone surrogates passed through, never raising)."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8", "surrogatepass")).hexdigest()


def _cleared(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return []
    if isinstance(value, Mapping):
        return {}
    return None


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The PATCH body taking ``old`` to ``new``: only keys whose value differs."""
    body: dict[str, Any] = {}
    for key in new:
        if key not in old or old[key] != new[key]:
            if key not in old and new[key] is None:
                continue  # absent and null mean the same: nothing to clear
            body[key] = new[key]
    for key in old:
        if key not in new and old[key] is not None and old[key] != _cleared(old[key]):
            body[key] = _cleared(old[key])
    return body


def phone_digest(phone: str) -> str:
    """First 16 hex of sha256(phone): identifies a contact without exposing the number."""
    return hashlib.sha256(phone.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def idempotency_key(action: str, phone: str, seq: int, payload_hash: str) -> str:
    """``erzy-<action>-<phone digest>-<seq>-<hash[:16]>``; see the module rules."""
    return f"erzy-{action}-{phone_digest(phone)}-{int(seq)}-{payload_hash[:16]}"


def scoped_key(key: str, account_id: str) -> str:
    """``key`` made unique to the state that issues it: ``erzy-<account id>-...``."""
    return f"erzy-{account_id}-{key.removeprefix('erzy-')}"
