"""Bringing a state database written by an earlier release up to date, in place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from erzy_pipelines.state.database import chunks, insert_ignore, run_write, utcnow
from erzy_pipelines.state.schema import (
    LEGACY_ACCOUNT,
    accounts,
    contact_state,
    sync_audit,
    sync_runs,
)

_BEFORE_ACCOUNTS = "erzy_contact_state"
_BEFORE_ACCOUNTS_KEPT = "erzy_contact_state_before_accounts"


def migrate(engine: Engine) -> None:
    """Bring a state database written by an earlier version up to this layout. Idempotent, and
    safe when several processes start at once (each step tolerates another having done it).

    - Contact state keyed by phone alone (``erzy_contact_state``) is copied into
      ``erzy_contacts`` under ``LEGACY_ACCOUNT``: the first account it is proven to describe
      takes it over (``sync/accounts.py``); the old table is kept, renamed, and never read again.
    - ``erzy_sync_audit`` and ``erzy_sync_runs`` get their ``account_id`` column,
      ``erzy_contacts`` its ``source_fp``, ``source_read_at`` and ``confirmed_at``,
      ``erzy_accounts`` its ``namespace`` ("") and ``erzy_sync_runs`` its ``deleted`` and
      ``drift_*`` counts (0) and ``crm_records`` (NULL).
    """
    inspector = sa.inspect(engine)
    tables = set(inspector.get_table_names())
    for table in (sync_audit, sync_runs):
        if "account_id" not in {c["name"] for c in inspector.get_columns(table.name)}:
            _try_ddl(engine, f"ALTER TABLE {table.name} ADD COLUMN account_id VARCHAR(32)")
    contact_columns = {c["name"] for c in inspector.get_columns(contact_state.name)}
    if "source_fp" not in contact_columns:
        _try_ddl(engine, f"ALTER TABLE {contact_state.name} ADD COLUMN source_fp BIGINT")
    for name in ("source_read_at", "confirmed_at"):
        if name not in contact_columns:
            _try_ddl(engine, f"ALTER TABLE {contact_state.name} ADD COLUMN {name} DOUBLE PRECISION")
    run_columns = {c["name"] for c in inspector.get_columns(sync_runs.name)}
    if "crm_records" not in run_columns:
        _try_ddl(engine, f"ALTER TABLE {sync_runs.name} ADD COLUMN crm_records INTEGER")
    for name in ("deleted", "drift_deleted", "drift_edited"):
        if name not in run_columns:
            _try_ddl(
                engine, f"ALTER TABLE {sync_runs.name} ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0"
            )
    if "namespace" not in {c["name"] for c in inspector.get_columns(accounts.name)}:
        _try_ddl(
            engine,
            f"ALTER TABLE {accounts.name} ADD COLUMN namespace VARCHAR(64) NOT NULL DEFAULT ''",
        )
    if _BEFORE_ACCOUNTS not in tables:
        return
    try:
        old = sa.Table(_BEFORE_ACCOUNTS, sa.MetaData(), autoload_with=engine)
    except sa.exc.NoSuchTableError:
        return  # another process migrated it a moment ago
    columns = [c.name for c in contact_state.columns if c.name in old.c and c.name != "account_id"]
    with engine.connect() as conn:
        found = conn.execute(sa.select(*(old.c[n] for n in columns))).mappings()
        # Read back without our column types: SQLite and MariaDB hand back naive UTC times.
        rows = [{k: aware(v) for k, v in r.items()} for r in found]

    def copy_rows(conn: Connection) -> None:
        insert_ignore(
            conn,
            accounts,
            [{"account_id": LEGACY_ACCOUNT, "label": "before accounts", "created_at": utcnow()}],
        )
        for chunk in chunks(rows):
            insert_ignore(conn, contact_state, [{**r, "account_id": LEGACY_ACCOUNT} for r in chunk])

    run_write(engine, copy_rows)
    _try_ddl(engine, f"ALTER TABLE {_BEFORE_ACCOUNTS} RENAME TO {_BEFORE_ACCOUNTS_KEPT}")


def aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _try_ddl(engine: Engine, ddl: str) -> None:
    """Run a schema change another process may have made already (then it fails harmlessly)."""
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
    except sa.exc.DBAPIError:
        pass
