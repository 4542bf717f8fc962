"""Per-phone leases: which run may write a contact now."""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from erzy_pipelines.state.base import StoreBase
from erzy_pipelines.state.database import utcnow
from erzy_pipelines.state.schema import contact_state


class LeaseStore(StoreBase):
    """Per-phone leases: which run may write a contact now."""

    def claim(
        self, phone: str, run_id: str, lease_seconds: float = 600.0, now: float | None = None
    ) -> bool:
        """Take (or renew) the phone's lease for ``run_id``; False if another run holds it.

        ``now`` is wall-clock epoch seconds (leases are compared across processes).
        """
        now = time.time() if now is None else now
        c = contact_state.c
        stmt = (
            contact_state.update()
            .where(
                self._mine(
                    c.phone == phone,
                    sa.or_(c.lease_run_id.is_(None), c.lease_run_id == run_id, c.lease_until < now),
                )
            )
            .values(lease_run_id=run_id, lease_until=now + lease_seconds, updated_at=utcnow())
        )

        def txn(conn: Connection) -> bool:
            if conn.execute(stmt).rowcount == 1:
                return True
            self._blank_rows(conn, [phone])
            return conn.execute(stmt).rowcount == 1

        return self._write(txn)

    def renew(
        self,
        run_id: str,
        lease_seconds: float,
        now: float | None = None,
        phone: str | None = None,
    ) -> int:
        """Extend the leases ``run_id`` holds (in any account; with ``phone``, only that contact's
        in this store's account); returns how many it holds."""
        now = time.time() if now is None else now
        held = contact_state.c.lease_run_id == run_id
        if phone is not None:
            held = self._mine(held, contact_state.c.phone == phone)
        stmt = contact_state.update().where(held).values(lease_until=now + lease_seconds)
        return self._write(lambda conn: conn.execute(stmt).rowcount)

    def release(self, phone: str, run_id: str) -> None:
        """Drop the lease if ``run_id`` holds it."""
        c = contact_state.c
        stmt = (
            contact_state.update()
            .where(self._mine(c.phone == phone, c.lease_run_id == run_id))
            .values(lease_run_id=None, lease_until=None)
        )
        self._write(lambda conn: conn.execute(stmt))

    def lease_holders(self) -> list[str]:
        """Run ids holding at least one lease (live or expired, any account), for finding dead
        holders."""
        c = contact_state.c
        query = sa.select(c.lease_run_id).where(c.lease_run_id.is_not(None)).distinct()
        with self._engine.connect() as conn:
            return sorted(conn.execute(query).scalars())

    def release_all(self, run_id: str) -> int:
        """Drop every lease ``run_id`` still holds (any account); returns how many."""
        stmt = (
            contact_state.update()
            .where(contact_state.c.lease_run_id == run_id)
            .values(lease_run_id=None, lease_until=None)
        )
        return self._write(lambda conn: conn.execute(stmt).rowcount)
