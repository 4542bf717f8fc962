"""Request validation with the documented limits.

Choices where the docs say [unknown]:

* A title must contain a non-blank character (1–200 characters, counted as code points).
* ``email`` must look like ``local@domain.tld`` (at most 254 characters); ``""`` is invalid.
* ``tags``: at most 20, each 1–50 characters; kept in the order sent, duplicates dropped.
* ``groupIds``: at most 20 (counted as sent), each must name an existing contact group;
  duplicates dropped. An unknown or malformed group id is a ``VALIDATION_ERROR`` on ``groupIds``.
* ``customFields``: any JSON object; values are stored as sent.
* ``null`` is accepted for ``email`` and ``notes`` only: on create it means "absent", on PATCH it
  clears the field. ``null`` for any other field is a validation error; send ``[]`` / ``{}`` to
  clear ``tags``, ``groupIds`` or ``customFields``.
* Unknown body fields, and read-only ones (``id``, ``createdAt``, ``optedOut``), are rejected with
  a ``VALIDATION_ERROR`` naming the field, so a typo never silently drops data.
* Contact ids look like ``contact_`` followed by 1–64 lowercase letters or digits (the docs'
  ``contact_456`` included); anything else is ``400 INVALID_ID`` before any lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .api_errors import ApiError, validation_error

E164_RE = re.compile(r"^\+[1-9]\d{1,14}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CONTACT_ID_RE = re.compile(r"^contact_[0-9a-z]{1,64}$")

TITLE_MAX = 200
NOTES_MAX = 5000
TAGS_MAX = 20
TAG_MAX = 50
GROUPS_MAX = 20
EMAIL_MAX = 254

FIELDS = ("title", "phone", "email", "notes", "tags", "groupIds", "customFields")
READ_ONLY = ("id", "createdAt", "optedOut")
NULLABLE = ("email", "notes")


def check_contact_id(contact_id: str) -> str:
    if not CONTACT_ID_RE.match(contact_id):
        raise ApiError(400, "INVALID_ID", f"Malformed contact id: {contact_id[:80]!r}.")
    return contact_id


def _string_list(
    name: str, value: Any, max_items: int, details: list[dict[str, str]]
) -> list[str] | None:
    if not isinstance(value, list):
        details.append({"field": name, "message": "must be an array of strings"})
        return None
    if len(value) > max_items:
        details.append({"field": name, "message": f"at most {max_items} items allowed"})
        return None
    if not all(isinstance(item, str) for item in value):
        details.append({"field": name, "message": "every item must be a string"})
        return None
    return list(dict.fromkeys(value))


def validate_contact(body: Any, *, partial: bool, groups: Iterable[str]) -> dict[str, Any]:
    """Return the cleaned fields of a create (``partial=False``) or PATCH body, or raise."""
    if not isinstance(body, dict):
        raise validation_error([{"field": "body", "message": "must be a JSON object"}])
    details: list[dict[str, str]] = []
    for name in body:
        if name in READ_ONLY:
            details.append({"field": name, "message": "is read-only"})
        elif name not in FIELDS:
            details.append({"field": name, "message": "unknown field"})
    if not partial:
        for name in ("title", "phone"):
            if body.get(name) is None:
                details.append({"field": name, "message": "is required"})
    out: dict[str, Any] = {}
    for name in FIELDS:
        if name not in body:
            continue
        value = body[name]
        if value is None:
            if name in NULLABLE:
                out[name] = None
            elif partial or name not in ("title", "phone"):
                details.append({"field": name, "message": "must not be null"})
            continue
        if name == "title":
            if not isinstance(value, str):
                details.append({"field": name, "message": "must be a string"})
            elif not value.strip() or len(value) > TITLE_MAX:
                details.append({"field": name, "message": f"must be 1-{TITLE_MAX} characters"})
            else:
                out[name] = value
        elif name == "phone":
            if not isinstance(value, str) or not E164_RE.match(value):
                details.append(
                    {"field": name, "message": "must be in E.164 format, e.g. +14155551234"}
                )
            else:
                out[name] = value
        elif name == "email":
            if not isinstance(value, str) or len(value) > EMAIL_MAX or not EMAIL_RE.match(value):
                details.append({"field": name, "message": "must be a valid email address"})
            else:
                out[name] = value
        elif name == "notes":
            if not isinstance(value, str):
                details.append({"field": name, "message": "must be a string"})
            elif len(value) > NOTES_MAX:
                details.append({"field": name, "message": f"at most {NOTES_MAX} characters"})
            else:
                out[name] = value
        elif name == "tags":
            tags = _string_list(name, value, TAGS_MAX, details)
            if tags is not None:
                bad = [i for i, tag in enumerate(tags) if not 1 <= len(tag) <= TAG_MAX]
                if bad:
                    message = f"each tag must be 1-{TAG_MAX} characters (tags[{bad[0]}] is not)"
                    details.append({"field": name, "message": message})
                else:
                    out[name] = tags
        elif name == "groupIds":
            ids = _string_list(name, value, GROUPS_MAX, details)
            if ids is not None:
                known = set(groups)
                unknown = [gid for gid in ids if gid not in known]
                if unknown:
                    shown = ", ".join(repr(gid[:80]) for gid in unknown[:5])
                    details.append({"field": name, "message": f"unknown contact group(s): {shown}"})
                else:
                    out[name] = ids
        elif name == "customFields":
            if not isinstance(value, dict):
                details.append({"field": name, "message": "must be an object"})
            else:
                out[name] = value
    if details:
        raise validation_error(details)
    return out


def int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``; 400 VALIDATION_ERROR otherwise."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise validation_error(
            [{"field": name, "message": f"must be an integer between {low} and {high}"}]
        )
    return value
