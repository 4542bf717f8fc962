"""A normalized contact as bytes: how it travels back from a normalizing worker and how the
record cache stores it.

``marshal`` of the contact's fields: plain values only, fast both ways (a pickled dataclass goes
through Python code per object, which cost a first run of a million records seconds on each
side of the pipe), and loading it runs no code.
"""

from __future__ import annotations

import marshal
from typing import Any

from erzy_pipelines.core.normalize import Contact


def encode_contact(contact: Contact) -> bytes:
    return marshal.dumps(
        (
            contact.phone, contact.title, contact.email, contact.notes, contact.tags,
            contact.group_ids, contact.group_keys, contact.custom_fields, contact.crm_ids,
            contact.updated_at, contact.warnings,
        )
    )


def decode_contact(data: bytes, shared: dict[Any, Any] | None = None) -> Contact | None:
    """The contact, or None if the bytes are not one (another Python wrote them). ``shared``
    makes equal tuples (tags, groups, custom fields, warnings) one object across the contacts
    decoded with it: a million contacts hold a few thousand distinct ones."""
    try:
        f = marshal.loads(data)
        if shared is None:
            return Contact(*f)
        keep = shared.setdefault
        return Contact(
            f[0], f[1], f[2], f[3], keep(f[4], f[4]), keep(f[5], f[5]), keep(f[6], f[6]),
            keep(f[7], f[7]), f[8], f[9], keep(f[10], f[10]),
        )
    except (EOFError, ValueError, TypeError, IndexError):
        return None
