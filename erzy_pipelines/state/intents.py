"""What a write did: intents before a request, then success, failure, doubt or deferral."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from erzy_pipelines.core.plan import IN_DOUBT
from erzy_pipelines.state.base import NOTHING_PENDING, StoreBase
from erzy_pipelines.state.database import chunks, clip_message, dumps
from erzy_pipelines.state.schema import contact_state


class IntentStore(StoreBase):
    """What a write did: intents before a request, then success, failure, doubt or deferral."""

    def begin_intent(
        self, phone: str, run_id: str, seq: int, payload_hash: str, idempotency_key: str
    ) -> None:
        """Commit the write about to be sent, before sending it (fenced: LeaseLost if another
        run took the contact over; the caller must not send then)."""
        self._fenced(
            phone,
            run_id,
            {
                "intent_seq": seq,
                "pending_hash": payload_hash,
                "pending_key": idempotency_key,
                "pending_run_id": run_id,
            },
        )

    def record_success(
        self,
        phone: str,
        run_id: str,
        *,
        remote_id: str,
        payload: Mapping[str, Any],
        payload_hash: str,
        crm_ids: Iterable[str],
        created: bool,
        outcome: str,
        source_fp: int | None = None,
        source_read_at: float | None = None,
    ) -> None:
        """ErzyCall now holds ``payload`` for this phone: remember it, clear any pending work
        (fenced). ``source_fp``: the fingerprint of the CRM records ``payload`` came from;
        ``source_read_at``: when the CRM read it came from began."""
        values: dict[str, Any] = {
            "remote_id": remote_id,
            "last_payload": dumps(dict(payload)),
            "last_hash": payload_hash,
            "source_fp": source_fp,
            "source_read_at": source_read_at,
            "confirmed_at": time.time(),
            "crm_ids": dumps(sorted(set(crm_ids))),
            "last_outcome": outcome,
            **NOTHING_PENDING,
        }
        if created:
            values["created_by_sync"] = True
            self._fenced(phone, run_id, values)
        else:  # ours only while it is the very contact the sync created (not one it adopted)
            self._fenced(phone, run_id, values, not_ours_unless=remote_id)

    def record_failure(
        self,
        phone: str,
        run_id: str,
        *,
        outcome: str,
        error_code: str | None,
        error_message: str | None,
        payload_hash: str | None,
        permanent: bool,
        new_intent: bool = False,
    ) -> None:
        """Count a failure (fenced). Permanent: remember the rejected payload hash and drop the
        intent. Transient: the pending intent stays so the rerun reuses the same idempotency
        key — unless ``new_intent`` (the key itself was refused: IDEMPOTENCY_MISMATCH), then the
        write is left in doubt under no key, and the rerun sends every field under a new one.
        """
        values: dict[str, Any] = {
            "last_outcome": outcome,
            "last_error_code": error_code,
            "last_error_message": clip_message(error_message),
            "failure_count": contact_state.c.failure_count + 1,
            "deferred": 0,
        }
        if permanent:
            values.update(
                rejected_hash=payload_hash, pending_hash=None, pending_key=None, pending_run_id=None
            )
        elif new_intent:
            values.update(pending_hash=IN_DOUBT, pending_key=None)
        self._fenced(phone, run_id, values)

    def mark_in_doubt(self, phone: str, run_id: str, idempotency_key: str) -> None:
        """A write was sent but its outcome could not be recorded (the lease was lost): leave
        the contact in doubt, whoever holds it, so the next plan sends every field under a new
        key. Deliberately not fenced: it only ever makes the next run do more, never less."""
        c = contact_state.c
        stmt = (
            contact_state.update()
            .where(self._mine(c.phone == phone))
            .values(pending_hash=IN_DOUBT, pending_key=idempotency_key, pending_run_id=run_id)
        )
        self._write(lambda conn: conn.execute(stmt))

    def record_deferred(self, phones: Iterable[str], run_id: str) -> None:
        """Mark phones left for a later run (budget); ``run_id`` gives up its leases on them."""
        phones = sorted(set(phones))
        if not phones:
            return
        c = contact_state.c

        def txn(conn: Connection) -> None:
            self._upsert_state(conn, phones, {"deferred": 1})
            for chunk in chunks(phones):
                conn.execute(
                    contact_state.update()
                    .where(self._mine(c.phone.in_(chunk), c.lease_run_id == run_id))
                    .values(lease_run_id=None, lease_until=None)
                )

        self._write(txn)

    def clear_deferred(self, phones: Iterable[str]) -> None:
        """Phones that need no request any more (reverted, or rejected) leave the backlog."""
        phones = sorted(set(phones))
        c = contact_state.c

        def txn(conn: Connection) -> None:
            for chunk in chunks(phones):
                conn.execute(
                    contact_state.update()
                    .where(self._mine(c.phone.in_(chunk), c.deferred == 1))
                    .values(deferred=0)
                )

        if phones:
            self._write(txn)

    def backlog(self) -> int:
        """Contacts still owed a write: deferred, an unresolved intent, or a failure not
        rejected for good."""
        c = contact_state.c
        cond = self._mine(
            sa.or_(
                c.deferred != 0,
                c.pending_hash.is_not(None),
                sa.and_(c.failure_count > 0, c.rejected_hash.is_(None)),
            )
        )
        with self._engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(contact_state).where(cond)
                ).scalar_one()
            )
