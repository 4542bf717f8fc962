"""Engines, write transactions and dialect-portable inserts for the state database.

Every write is its own short transaction; on SQLite each starts with ``BEGIN IMMEDIATE`` (WAL +
busy timeout) so writers queue instead of failing, and contention is retried.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from erzy_pipelines.state.schema import ERROR_MESSAGE_MAX

T = TypeVar("T")
_IN_CHUNK = 500
_WRITE_ROWS = 5000  # rows per executemany



def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def create_store_engine(url_or_engine: str | sa.URL | Engine) -> tuple[Engine, bool]:
    """An engine ready for multi-process use, and whether the caller should dispose it.

    A given Engine is reused; on SQLite it gets the WAL/busy-timeout hook for its new
    connections (connections already pooled keep their settings).
    """
    if isinstance(url_or_engine, Engine):
        engine, owned = url_or_engine, False
    else:
        engine, owned = sa.create_engine(url_or_engine, pool_pre_ping=True), True
    if engine.dialect.name == "sqlite" and not event.contains(
        engine, "connect", _sqlite_on_connect
    ):
        event.listen(engine, "connect", _sqlite_on_connect)
    return engine, owned


def create_tables(engine: Engine, meta: sa.MetaData) -> None:
    """``create_all`` that tolerates another process creating the same tables at once."""
    for attempt in range(5):
        try:
            meta.create_all(engine)
            return
        except sa.exc.DBAPIError:
            # Lost a CREATE race ("already exists" / catalog unique violation): re-check.
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))


@contextmanager
def _write_tx(engine: Engine, read_committed: bool = False) -> Iterator[Connection]:
    with engine.connect() as conn:
        if read_committed and conn.dialect.name in ("mysql", "mariadb"):
            # InnoDB's default REPEATABLE READ could read a snapshot older than a lock just won.
            conn.execution_options(isolation_level="READ COMMITTED")
        if conn.dialect.name == "sqlite":
            # Take the write lock up front: a deferred transaction that reads then writes
            # can fail with SQLITE_BUSY instead of waiting for the busy timeout.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise


def _is_contention(exc: sa.exc.DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in ("40001", "40P01", "55P03"):  # serialization/deadlock
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in (1205, 1213):  # MariaDB lock wait timeout / deadlock
        return True
    return "database is locked" in str(orig)


def run_write(
    engine: Engine,
    fn: Callable[[Connection], T],
    attempts: int = 6,
    *,
    read_committed: bool = False,
) -> T:
    """Run ``fn`` in one committed write transaction, retrying deadlocks and lock timeouts.

    ``read_committed``: every statement sees rows committed before it (MariaDB's default is
    REPEATABLE READ; PostgreSQL already reads committed; SQLite serializes writers anyway).
    """
    for attempt in range(attempts):
        try:
            with _write_tx(engine, read_committed) as conn:
                return fn(conn)
        except sa.exc.DBAPIError as exc:
            if attempt == attempts - 1 or not _is_contention(exc):
                raise
            time.sleep(0.02 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


_INSERTS: dict[str, Callable[[sa.Table], Any]] = {
    "postgresql": pg_insert,
    "sqlite": sqlite_insert,
    "mysql": mysql.insert,
    "mariadb": mysql.insert,
}


def _dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows its own conflict clause."""
    insert = _INSERTS.get(conn.dialect.name)
    if insert is None:
        raise ValueError(
            f"ERZY_STATE_DATABASE_URL: the state database must be SQLite, PostgreSQL or "
            f"MariaDB/MySQL, not {conn.dialect.name}"
        )
    return insert(table)


def insert_ignore(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows whose primary key is absent; existing rows are left untouched (race safe)."""
    if not rows:
        return
    stmt = _dialect_insert(conn, table)
    if conn.dialect.name in ("mysql", "mariadb"):
        pk = table.primary_key.columns[0].name
        stmt = stmt.on_duplicate_key_update({pk: stmt.inserted[pk]})  # no-op on duplicates
    else:
        stmt = stmt.on_conflict_do_nothing()
    conn.execute(stmt, [dict(r) for r in rows])


def upsert(
    conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert rows (tuples in ``columns`` order), replacing the non-key columns of rows whose
    primary key exists."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    values = [name for name in columns if name not in keys]
    stmt = _dialect_insert(conn, table)
    if conn.dialect.name in ("mysql", "mariadb"):
        stmt = stmt.on_duplicate_key_update({v: stmt.inserted[v] for v in values})
    else:
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={v: stmt.excluded[v] for v in values}
        )
    insert_many(conn, stmt, columns, rows)


def insert_many(
    conn: Connection, stmt: Any, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Run an INSERT for many rows (tuples in ``columns`` order) through the driver's own
    executemany, each column's bind processing kept. SQLAlchemy's per-row parameter handling
    costs more than the database itself when a first run writes a million audit or cache rows.
    """
    if not rows:
        return
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
    processors = [
        (i, processor)
        for i, name in enumerate(columns)
        if (processor := stmt.table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
    ]
    if processors:
        last: dict[int, tuple[Any, Any]] = {}  # a value repeated row after row (a run's "now")
        processed = []
        for row in rows:
            row = list(row)
            for i, processor in processors:
                value = row[i]
                before = last.get(i)
                if before is None or before[0] is not value:
                    before = last[i] = (value, processor(value))
                row[i] = before[1]
            processed.append(tuple(row))
        rows = processed
    if compiled.positional:
        order = [columns.index(name) for name in compiled.positiontup]
        in_order = order == list(range(len(columns)))
        params: list[Any] = [row if in_order else tuple(row[i] for i in order) for row in rows]
    else:
        params = [dict(zip(columns, row, strict=True)) for row in rows]
    conn.exec_driver_sql(compiled.string, params)


def chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def utcnow() -> datetime:
    return datetime.now(UTC)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def clip_message(message: str | None, limit: int = ERROR_MESSAGE_MAX) -> str | None:
    if message is None:
        return None
    message = str(message)
    return message if len(message) <= limit else message[: limit - 1] + "…"
