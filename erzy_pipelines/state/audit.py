"""The audit trail: one row per thing a run did (or would do) to a contact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from erzy_pipelines.core.outcomes import Outcome
from erzy_pipelines.state.base import StoreBase
from erzy_pipelines.state.database import (
    _WRITE_ROWS,
    chunks,
    clip_message,
    dumps,
    insert_many,
    utcnow,
)
from erzy_pipelines.state.schema import AUDIT_FIELDS, sync_audit

_AUDIT_FIELD_SET = frozenset(AUDIT_FIELDS)
_AUDIT_COLUMNS = tuple(c.name for c in sync_audit.columns if c.name != "id")  # table order
_AUDIT_LIMITS = tuple(  # (position in AUDIT_FIELDS, length) of the columns that may hold
    # outside values (a raw CRM phone, a group key, the API's codes and ids): cut to fit
    (AUDIT_FIELDS.index(name), sync_audit.c[name].type.length)
    for name in ("partition_key", "phone", "error_code", "remote_id")
)
_I_MESSAGE, _I_CREATED = AUDIT_FIELDS.index("error_message"), AUDIT_FIELDS.index("created_at")
_I_ACCOUNT = _AUDIT_COLUMNS.index("account_id")  # where the store's account goes in a row




class AuditStore(StoreBase):
    """The audit trail: one row per thing a run did (or would do) to a contact."""

    def add_audit(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append audit rows in one transaction. Keys are :data:`AUDIT_FIELDS`; ``crm_ids`` may
        be a string or a list (stored as JSON); ``created_at`` defaults to now (UTC)."""
        values = []
        for row in rows:
            if not _AUDIT_FIELD_SET.issuperset(row):
                raise ValueError(f"unknown audit fields: {sorted(set(row) - _AUDIT_FIELD_SET)}")
            crm_ids = row.get("crm_ids")
            if crm_ids is not None and not isinstance(crm_ids, str):
                row = {**row, "crm_ids": dumps(list(crm_ids))}
            values.append(tuple(row.get(name) for name in AUDIT_FIELDS))
        self.add_audit_values(values)

    def add_audit_values(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append audit rows given as tuples in :data:`AUDIT_FIELDS` order (``crm_ids`` as
        text, ``created_at`` None for now) in one transaction: the way a run's own results are
        written, a million of them in a first dry run."""
        if not rows:
            return
        now, account = utcnow(), self.account
        prepared = []
        for row in rows:
            values = list(row)
            if values[_I_MESSAGE] is not None:
                values[_I_MESSAGE] = clip_message(values[_I_MESSAGE])
            if values[_I_CREATED] is None:
                values[_I_CREATED] = now
            for i, length in _AUDIT_LIMITS:  # a too-long raw value must not lose the row
                value = values[i]
                if isinstance(value, str) and len(value) > length:
                    values[i] = value[:length]
            values.insert(_I_ACCOUNT, account)
            prepared.append(values)

        def txn(conn: Connection) -> None:
            for chunk in chunks(prepared, _WRITE_ROWS):
                insert_many(conn, sync_audit.insert().inline(), _AUDIT_COLUMNS, chunk)

        self._write(txn)

    def audit_outcomes(self, run_id: str) -> list[tuple[str, str, str]]:
        """(action, phone, outcome) of a run's audit rows, newest first: what its counts are
        made of, without reading whole rows."""
        a = sync_audit.c
        query = (
            sa.select(a.action, a.phone, a.outcome)
            .where(a.run_id == run_id)
            .order_by(a.id.desc())
        )
        with self._engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]

    def deferral_reasons(self, run_id: str) -> dict[str, int]:
        """Why a run deferred work: its ``deferred`` audit rows counted by error code."""
        a = sync_audit.c
        query = (
            sa.select(a.error_code, sa.func.count())
            .where(a.run_id == run_id, a.outcome == Outcome.DEFERRED)
            .group_by(a.error_code)
        )
        with self._engine.connect() as conn:
            return {code or "unknown": n for code, n in conn.execute(query)}

    def audit_rows(self, run_id: str | None = None, limit: int | None = None) -> list[dict]:
        """Audit rows, newest first, optionally for one run."""
        query = sa.select(sync_audit).order_by(sync_audit.c.id.desc())
        if run_id is not None:
            query = query.where(sync_audit.c.run_id == run_id)
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]
