"""What every part of the state store shares: its engine, its account, fenced writes."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from erzy_pipelines.core.plan import ContactState
from erzy_pipelines.state.database import (
    T,
    chunks,
    create_store_engine,
    create_tables,
    insert_ignore,
    run_write,
    utcnow,
)
from erzy_pipelines.state.migrations import migrate
from erzy_pipelines.state.schema import DEFAULT_ACCOUNT, contact_state, metadata

STATE_FIELDS = {f.name for f in dataclasses.fields(ContactState)}
#: A contact whose last write is settled: no error, intent, rejection, failure or deferral left.
NOTHING_PENDING: dict[str, Any] = {
    "last_error_code": None,
    "last_error_message": None,
    "rejected_hash": None,
    "failure_count": 0,
    "pending_hash": None,
    "pending_key": None,
    "pending_run_id": None,
    "deferred": 0,
}





class LeaseLost(RuntimeError):
    """This run no longer holds the contact's lease: another run took it over. Nothing is
    written; the contact is planned again by the next run."""


class StoreBase:
    """A state database bound to one ErzyCall account; composed into ``StateStore``."""

    def __init__(self, url: str | sa.URL | Engine, account: str = DEFAULT_ACCOUNT) -> None:
        self._engine, self._owned = create_store_engine(url)
        self.account = account
        create_tables(self._engine, metadata)
        migrate(self._engine)

    def with_account(self, account: str, *, take_engine: bool = False) -> Self:
        """The same database, bound to ``account``'s contact state. ``take_engine``: the new
        store disposes the engine on close (for a store made only to be bound)."""
        bound = copy.copy(self)
        bound.account, bound._owned = account, self._owned and take_engine
        return bound

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Dispose the engine if this store created it."""
        if self._owned:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, fn: Callable[[Connection], T]) -> T:
        return run_write(self._engine, fn)

    def _mine(self, *conditions: Any) -> Any:
        """``conditions`` on this account's contact rows."""
        return sa.and_(contact_state.c.account_id == self.account, *conditions)

    def _blank_rows(self, conn: Connection, phones: Iterable[str]) -> None:
        rows = [{"account_id": self.account, "phone": p} for p in phones]
        insert_ignore(conn, contact_state, rows)

    def _upsert_state(
        self, conn: Connection, phones: Sequence[str], values: Mapping[str, Any]
    ) -> None:
        """UPDATE the phones' rows, creating blank rows first for phones never seen."""
        values = {**values, "updated_at": utcnow()}
        for chunk in chunks(list(phones)):
            where = self._mine(contact_state.c.phone.in_(chunk))
            if conn.execute(contact_state.update().where(where).values(values)).rowcount < len(
                chunk
            ):
                self._blank_rows(conn, chunk)
                conn.execute(contact_state.update().where(where).values(values))

    def _fenced(
        self, phone: str, run_id: str, values: Mapping[str, Any], *, not_ours_unless: Any = None
    ) -> None:
        """UPDATE one contact only while ``run_id`` holds its lease; else LeaseLost.
        ``not_ours_unless``: a remote id; when the stored one differs, the contact is no longer
        marked as created by the sync (it now points at a contact the sync adopted)."""
        c = contact_state.c
        mine = self._mine(c.phone == phone, c.lease_run_id == run_id)
        stmt = contact_state.update().where(mine).values({**values, "updated_at": utcnow()})

        def txn(conn: Connection) -> None:
            if not_ours_unless is not None:  # before remote_id is overwritten below
                other = sa.or_(c.remote_id.is_(None), c.remote_id != not_ours_unless)
                conn.execute(
                    contact_state.update().where(mine, other).values(created_by_sync=False)
                )
            if conn.execute(stmt).rowcount != 1:
                raise LeaseLost(f"run {run_id} no longer holds the lease of this contact")

        self._write(txn)


def decode_state_row(row: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(row)
    for key in ("last_payload", "crm_ids"):
        if values[key] is not None:
            values[key] = json.loads(values[key])
    values["created_by_sync"] = bool(values["created_by_sync"])
    values["crm_ids"] = values["crm_ids"] or []
    return values
