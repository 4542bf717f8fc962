"""Reading and settling contact state: what ErzyCall holds per phone, as last confirmed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from erzy_pipelines.core.plan import ContactState
from erzy_pipelines.state.base import NOTHING_PENDING, STATE_FIELDS, StoreBase, decode_state_row
from erzy_pipelines.state.database import chunks, dumps, insert_ignore, utcnow
from erzy_pipelines.state.schema import contact_state


class ContactStateStore(StoreBase):
    """Reading and settling contact state: what ErzyCall holds per phone, as last confirmed."""

    def load_states(self, phones: Iterable[str] | None = None) -> dict[str, ContactState]:
        """States by phone; ``None`` loads all. Phones without a row are simply absent."""
        query = sa.select(contact_state).where(self._mine())
        rows: list[Mapping[str, Any]] = []
        with self._engine.connect() as conn:
            if phones is None:
                rows = list(conn.execute(query).mappings())
            else:
                wanted = sorted(set(phones))
                any_row = sa.select(contact_state.c.phone).where(self._mine()).limit(1)
                if wanted and conn.execute(any_row).first() is None:
                    wanted = []  # an account with no contacts yet: nothing to look up
                for chunk in chunks(wanted):
                    q = query.where(contact_state.c.phone.in_(chunk))
                    rows.extend(conn.execute(q).mappings())
        return {row["phone"]: self._to_state(row) for row in rows}

    @staticmethod
    def _to_state(row: Mapping[str, Any]) -> ContactState:
        values = decode_state_row(row)
        values["deferred"] = bool(values["deferred"])
        return ContactState(**{k: v for k, v in values.items() if k in STATE_FIELDS})

    def state_row(self, phone: str) -> dict[str, Any] | None:
        """Every stored column of one phone (JSON decoded), for inspection and tests."""
        with self._engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(contact_state).where(self._mine(contact_state.c.phone == phone))
                )
                .mappings()
                .first()
            )
        return None if row is None else decode_state_row(row)

    def created_contacts(
        self, before: datetime | None = None
    ) -> Iterator[tuple[ContactState, list[str]]]:
        """(state, CRM ids) of every contact the sync created that ErzyCall holds, last
        written ``before`` (when given): what the opt-in removal looks among
        (``core/removal.py``)."""
        c = contact_state.c
        written = sa.true() if before is None else c.updated_at < before
        query = sa.select(contact_state).where(
            self._mine(c.created_by_sync.is_(True), c.remote_id.is_not(None), written)
        )
        with self._engine.connect() as conn:
            rows = list(conn.execute(query).mappings())
        for row in rows:
            yield self._to_state(row), list(decode_state_row(row)["crm_ids"] or [])

    def created_count(self) -> int:
        """How many contacts the sync created that ErzyCall holds: all that removal can ever
        delete, and the yardstick of its share guard (``core/removal.py``)."""
        c = contact_state.c
        query = sa.select(sa.func.count()).where(
            self._mine(c.created_by_sync.is_(True), c.remote_id.is_not(None))
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def record_deleted(self, phone: str, run_id: str) -> None:
        """The sync deleted this contact from ErzyCall (fenced): the state forgets its id and
        payload, so a CRM record with this phone later is created again."""
        self._fenced(
            phone,
            run_id,
            {
                "remote_id": None,
                "last_payload": None,
                "last_hash": None,
                "source_fp": None,
                "created_by_sync": False,
                "last_outcome": "deleted",
                **NOTHING_PENDING,
            },
        )

    def known_remote_ids(self, limit: int = 3) -> list[tuple[str, str]]:
        """(phone, remote id) of the contacts confirmed most recently: what probing an account
        looks for (see ``sync/accounts.py``)."""
        c = contact_state.c
        query = (
            sa.select(c.phone, c.remote_id)
            .where(self._mine(c.remote_id.is_not(None), c.last_hash.is_not(None)))
            # confirmed_at: when a write last succeeded (claims, failures and deferrals leave it
            # alone); rows from before it was kept come last, by when they last changed.
            .order_by(c.confirmed_at.is_(None), c.confirmed_at.desc(), c.updated_at.desc(), c.phone)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [(phone, remote_id) for phone, remote_id in conn.execute(query)]

    def crm_ids_last_sent_with(self, group_ids: Iterable[str]) -> set[str]:
        """CRM ids of the contacts last sent with one of these ErzyCall groups.

        A contact that left a group in the CRM must still be synced in that group's run, so
        that ErzyCall drops the membership.
        """
        wanted = set(group_ids)
        if not wanted:
            return set()
        c = contact_state.c
        # A text match first (an id appears in the JSON as "id"), so only candidate rows are
        # parsed: a group run over a large state reads a few rows, not every payload.
        needles = [json.dumps(g, ensure_ascii=False) for g in sorted(wanted)]
        mentions = sa.or_(*(c.last_payload.contains(n, autoescape=True) for n in needles))
        query = sa.select(c.last_payload, c.crm_ids).where(
            self._mine(c.last_payload.is_not(None), mentions)
        )
        out: set[str] = set()
        with self._engine.connect() as conn:
            for payload, crm_ids in conn.execute(query):
                if set(json.loads(payload).get("groupIds") or ()) & wanted:
                    out.update(json.loads(crm_ids or "[]"))
        return out

    def settled_fingerprints(self, phones: Iterable[str] | None = None) -> dict[str, int]:
        """phone → the CRM fingerprint ErzyCall's copy was made from, for contacts with no
        work outstanding (nothing pending, deferred or failed); ``None`` reads all of them."""
        c = contact_state.c
        query = sa.select(c.phone, c.source_fp).where(
            self._mine(
                c.source_fp.is_not(None),
                c.remote_id.is_not(None),
                c.pending_hash.is_(None),
                c.deferred == 0,
                c.failure_count == 0,
            )
        )
        with self._engine.connect() as conn:
            if phones is None:
                return {phone: fp for phone, fp in conn.execute(query)}
            out: dict[str, int] = {}
            for chunk in chunks(sorted(set(phones))):
                out.update((p, fp) for p, fp in conn.execute(query.where(c.phone.in_(chunk))))
            return out

    def mark_settled(self, settled: Iterable[tuple[str, str, int]]) -> None:
        """(phone, payload hash, fingerprint): the plan found ErzyCall already holds this
        payload, made from CRM records with this fingerprint. Recorded only where the state
        still says so (``last_hash`` equal), so a concurrent write is never papered over."""
        c = contact_state.c
        stmt = (
            contact_state.update()
            .where(
                c.account_id == sa.bindparam("a"),
                c.phone == sa.bindparam("p"),
                c.last_hash == sa.bindparam("h"),
                c.pending_hash.is_(None),
            )
            .values(source_fp=sa.bindparam("f"))
        )
        rows = [{"a": self.account, "p": p, "h": h, "f": f} for p, h, f in settled]
        for chunk in chunks(rows, 5000):
            self._write(lambda conn, chunk=chunk: conn.execute(stmt, list(chunk)))

    def insert_baseline(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add state rows found by ``erzy-pipelines baseline`` for phones the state has no row
        for (an existing row is never overwritten); returns how many were added."""
        now = utcnow()
        full = [
            {
                "account_id": self.account,
                "phone": r["phone"],
                "remote_id": r["remote_id"],
                "last_payload": dumps(r["last_payload"]),
                "last_hash": r["last_hash"],
                "crm_ids": dumps(list(r["crm_ids"])),
                "source_fp": r["source_fp"],
                "created_by_sync": False,
                "last_outcome": "baseline",
                "failure_count": 0,
                "intent_seq": 0,
                "deferred": 0,
                "updated_at": now,
                "confirmed_at": time.time(),
            }
            for r in rows
        ]
        for chunk in chunks(full, 2000):
            self._write(lambda conn, chunk=chunk: insert_ignore(conn, contact_state, chunk))
        return len(full)
