"""Contacts, groups, opt-outs and idempotency records in one SQLite database.

``db_path=None`` keeps everything in ``:memory:``; a file path survives restarts (contacts,
tombstones, opt-outs and idempotency records; rate-limit windows and keys are not stored).
One connection, one re-entrant lock: callers hold ``store.lock`` across a read-then-write so an
idempotency check, the write and its record are atomic.

Choices where the docs say [unknown]:

* Order is creation order (an autoincrement sequence), stable across restarts.
* A deleted contact leaves a tombstone, so a cursor pointing at it stays valid and its phone is
  free again.
* An opt-out belongs to the phone number, like a suppression list: deleting an opted-out contact
  and creating the phone again gives a contact that is still ``optedOut``. A PATCH never clears
  the flag; a contact whose phone changes keeps it, and the new phone is suppressed too.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    phone TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS contacts_live_phone ON contacts (phone) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS contact_groups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS opted_out_phones (phone TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT,
    created REAL NOT NULL
);
"""


class PhoneTaken(Exception):
    """Another live contact already has this phone."""


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_contact_id() -> str:
    return "contact_" + secrets.token_hex(12)


class ContactStore:
    """The sandbox's state. Every method is safe to call from any thread."""

    def __init__(self, db_path: str | None, groups: tuple[tuple[str, str], ...]) -> None:
        self.lock = threading.RLock()
        self._db = sqlite3.connect(
            db_path or ":memory:", check_same_thread=False, isolation_level=None
        )
        if db_path:
            # WAL + NORMAL: a commit survives a process crash without an fsync per write.
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._purged_at = 0.0
        self._db.executescript(SCHEMA)
        with self._tx():
            for gid, name in groups:
                self._db.execute(
                    "INSERT INTO contact_groups (id, name, created_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                    (gid, name, now_iso()),
                )
        self._group_ids = frozenset(g["id"] for g in self.groups())

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self._db.close()

    # -- groups ---------------------------------------------------------------------------
    def groups(self) -> list[dict[str, Any]]:
        with self.lock:
            rows = self._db.execute(
                "SELECT id, name, created_at FROM contact_groups ORDER BY seq"
            ).fetchall()
        return [{"id": r[0], "name": r[1], "createdAt": r[2]} for r in rows]

    @property
    def group_ids(self) -> frozenset[str]:
        return self._group_ids

    # -- contacts -------------------------------------------------------------------------
    def get(self, contact_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self._db.execute(
                "SELECT body FROM contacts WHERE id = ? AND deleted = 0", (contact_id,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def seq_of(self, contact_id: str) -> int | None:
        """The position of any contact ever stored, deleted ones included (for cursors)."""
        with self.lock:
            row = self._db.execute(
                "SELECT seq FROM contacts WHERE id = ?", (contact_id,)
            ).fetchone()
        return row[0] if row else None

    def iter_live(self, after_seq: int = 0) -> Iterator[dict[str, Any]]:
        """Live contacts in creation order, after ``after_seq``; hold ``lock`` while iterating."""
        cursor = self._db.execute(
            "SELECT body FROM contacts WHERE deleted = 0 AND seq > ? ORDER BY seq", (after_seq,)
        )
        for (body,) in cursor:
            yield json.loads(body)

    def all(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.iter_live())

    def _phone_owner(self, phone: str) -> str | None:
        row = self._db.execute(
            "SELECT id FROM contacts WHERE phone = ? AND deleted = 0", (phone,)
        ).fetchone()
        return row[0] if row else None

    def _suppressed(self, phone: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM opted_out_phones WHERE phone = ?", (phone,)
        ).fetchone()
        return row is not None

    def create(
        self,
        fields: dict[str, Any],
        *,
        contact_id: str | None = None,
        created_at: str | None = None,
        opted_out: bool = False,
    ) -> dict[str, Any]:
        """Store a new contact from validated fields; raise :class:`PhoneTaken` on a duplicate."""
        with self._tx():
            phone = fields["phone"]
            if self._phone_owner(phone) is not None:
                raise PhoneTaken(phone)
            cid = contact_id or new_contact_id()
            if self.seq_of(cid) is not None:
                raise ValueError(f"contact id {cid!r} already used")
            if opted_out:
                self._db.execute("INSERT OR IGNORE INTO opted_out_phones VALUES (?)", (phone,))
            contact = {
                "id": cid,
                "title": fields["title"],
                "phone": phone,
                "email": fields.get("email"),
                "notes": fields.get("notes"),
                "tags": list(fields.get("tags") or []),
                "groupIds": list(fields.get("groupIds") or []),
                "customFields": dict(fields.get("customFields") or {}),
                "optedOut": opted_out or self._suppressed(phone),
                "createdAt": created_at or now_iso(),
            }
            self._db.execute(
                "INSERT INTO contacts (id, phone, body) VALUES (?, ?, ?)",
                (cid, phone, json.dumps(contact)),
            )
        return contact

    def update(self, contact_id: str, changes: dict[str, Any]) -> dict[str, Any] | None:
        """Apply validated PATCH fields; ``None`` if the contact is gone, PhoneTaken on clash."""
        with self._tx():
            contact = self.get(contact_id)
            if contact is None:
                return None
            phone = changes.get("phone", contact["phone"])
            if phone != contact["phone"]:
                owner = self._phone_owner(phone)
                if owner is not None and owner != contact_id:
                    raise PhoneTaken(phone)
            contact.update(changes)
            if contact["optedOut"]:
                self._db.execute("INSERT OR IGNORE INTO opted_out_phones VALUES (?)", (phone,))
            elif self._suppressed(phone):
                contact["optedOut"] = True
            self._db.execute(
                "UPDATE contacts SET phone = ?, body = ? WHERE id = ?",
                (phone, json.dumps(contact), contact_id),
            )
        return contact

    def delete(self, contact_id: str) -> bool:
        with self._tx():
            cur = self._db.execute(
                "UPDATE contacts SET deleted = 1 WHERE id = ? AND deleted = 0", (contact_id,)
            )
            return cur.rowcount == 1

    # -- idempotency ----------------------------------------------------------------------
    def idempotent_result(self, scope: str, now: float, ttl: float) -> tuple[str, int, Any] | None:
        """(fingerprint, status, body) stored for ``scope`` within ``ttl`` seconds, else None."""
        with self.lock:
            if now - self._purged_at > 60.0:  # expired records are dead weight; drop them lazily
                self._db.execute("DELETE FROM idempotency WHERE created <= ?", (now - ttl,))
                self._purged_at = now
            row = self._db.execute(
                "SELECT fingerprint, status, body FROM idempotency WHERE scope = ? AND created > ?",
                (scope, now - ttl),
            ).fetchone()
        if row is None:
            return None
        return row[0], row[1], (json.loads(row[2]) if row[2] is not None else None)

    def remember(self, scope: str, fingerprint: str, status: int, body: Any, now: float) -> None:
        with self.lock:
            self._db.execute(
                "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?)",
                (scope, fingerprint, status, None if body is None else json.dumps(body), now),
            )
