"""The sync state, audit and run store (SQLAlchemy Core; SQLite, PostgreSQL, MariaDB).

Every write is its own short transaction, committed before the method returns, so a crash
between two requests loses nothing and a rerun resends nothing. Several processes may share
one database: per-phone leases keep two runs off the same contact, and on SQLite every write
transaction starts with ``BEGIN IMMEDIATE`` (WAL + busy timeout) so writers queue instead of
failing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from erzy_pipelines.core.plan import IN_DOUBT, ContactState

__all__ = [
    "AUDIT_FIELDS",
    "DEFAULT_ACCOUNT",
    "IN_DOUBT",
    "LEGACY_ACCOUNT",
    "LeaseLost",
    "ERROR_MESSAGE_MAX",
    "RUN_COUNT_FIELDS",
    "ContactState",
    "StateStore",
    "UtcDateTime",
    "create_store_engine",
    "create_tables",
    "insert_ignore",
    "insert_many",
    "run_write",
    "upsert",
]

T = TypeVar("T")

ERROR_MESSAGE_MAX = 1000
_IN_CHUNK = 500
_WRITE_ROWS = 5000  # rows per executemany
RUN_COUNT_FIELDS = (
    "created",
    "updated",
    "unchanged",
    "merged",
    "rejected",
    "failed",
    "deferred",
    "planned",
    "requests",
    "deleted",  # contacts the sync created and removed (opt-in, core/removal.py)
    "drift_deleted",  # a reconcile's repairs: contacts deleted in ErzyCall, created again
    "drift_edited",  # contacts edited in ErzyCall, their synced fields set back
)


class UtcDateTime(sa.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite and MariaDB have no zone, so UTC is stored naive
    (MariaDB with microseconds) and the zone is put back on read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# MariaDB's TEXT stops at 64 KB; a payload with large custom fields must still fit.
_LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrement needs INTEGER
TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}  # for every erzy_ table

metadata = sa.MetaData()

DEFAULT_ACCOUNT = "default"
"""The account of a store not bound to one (tools and tests that use a single account)."""
LEGACY_ACCOUNT = "legacy"
"""Contact state written before states were bound to accounts; claimed by the first account
whose contacts it is shown to describe (see ``erzy_pipelines/accounts.py``)."""

contact_state = sa.Table(
    "erzy_contacts",
    metadata,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("phone", sa.String(20), primary_key=True),
    sa.Column("remote_id", sa.String(64)),
    sa.Column("last_payload", _LongText),
    sa.Column("last_hash", sa.String(64)),
    sa.Column("crm_ids", _LongText),
    sa.Column("created_by_sync", sa.Boolean(), nullable=False, default=False),
    sa.Column("last_outcome", sa.String(32)),
    sa.Column("last_error_code", sa.String(64)),
    sa.Column("last_error_message", sa.Text()),
    sa.Column("rejected_hash", sa.String(64)),
    sa.Column("failure_count", sa.Integer(), nullable=False, default=0),
    sa.Column("intent_seq", sa.Integer(), nullable=False, default=0),
    sa.Column("pending_hash", sa.String(64)),
    sa.Column("pending_key", sa.String(255)),
    sa.Column("pending_run_id", sa.String(64)),
    sa.Column("deferred", sa.Integer(), nullable=False, default=0),
    sa.Column("lease_run_id", sa.String(64), index=True),
    sa.Column("lease_until", sa.Double()),  # epoch seconds; DOUBLE, a 4-byte FLOAT loses minutes
    sa.Column("updated_at", UtcDateTime()),
    # The fingerprint of the CRM records the payload of last_hash was made from (set only
    # together with last_hash): equal to this run's, with nothing pending, the contact needs no
    # work at all (see ``erzy_pipelines/incremental.py``).
    sa.Column("source_fp", sa.BigInteger()),
    # When the CRM read that last_payload came from began (epoch seconds): a run whose own read
    # began earlier never sends this contact (it would write an older CRM value back).
    sa.Column("source_read_at", sa.Double()),
    # When a write (or baseline) last confirmed what ErzyCall holds (epoch seconds): what the
    # account probe ranks contacts by; claims, failures and deferrals leave it alone.
    sa.Column("confirmed_at", sa.Double()),
    **TABLE_OPTIONS,
)

crm_records = sa.Table(
    "erzy_crm_records",
    metadata,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("crm_id", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.BigInteger(), nullable=False),  # of what was read, and the rules
    sa.Column("phone", sa.String(20)),  # E.164, when normalization accepted the record
    # The normalized contact (``core.contact_codec.encode_contact``), or NULL for a reject.
    sa.Column("contact", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")),
    sa.Column("reject_reason", sa.String(64)),
    sa.Column("reject_detail", sa.Text()),
    sa.Column("reject_phone", sa.String(255)),
    **TABLE_OPTIONS,
)

accounts = sa.Table(
    "erzy_accounts",
    metadata,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("label", sa.String(500)),  # the API base URL it was first seen at
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # The sync it belongs to: "" for the environment-variable sync, else the sync's name.
    sa.Column("namespace", sa.String(64), nullable=False, server_default=""),
    **TABLE_OPTIONS,
)

account_keys = sa.Table(
    "erzy_account_keys",
    metadata,
    sa.Column("base_url", sa.String(500), primary_key=True),
    sa.Column("key_id", sa.String(32), primary_key=True),  # a hash of the key, never the key
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("first_seen", UtcDateTime(), nullable=False),
    sa.Column("last_used", UtcDateTime(), nullable=False),
    **TABLE_OPTIONS,
)

sync_audit = sa.Table(
    "erzy_sync_audit",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), index=True),
    sa.Column("account_id", sa.String(32)),
    sa.Column("partition_key", sa.String(255)),
    sa.Column("crm_ids", sa.Text()),
    sa.Column("phone", sa.String(64), index=True),  # may be a raw, unparseable CRM value
    sa.Column("action", sa.String(32)),
    sa.Column("outcome", sa.String(32)),
    sa.Column("http_status", sa.Integer()),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text()),
    sa.Column("attempts", sa.Integer()),
    sa.Column("remote_id", sa.String(64)),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    **TABLE_OPTIONS,
)

sync_runs = sa.Table(
    "erzy_sync_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(32)),
    sa.Column("partition_key", sa.String(255)),
    sa.Column("started_at", UtcDateTime(), nullable=False, index=True),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("dry_run", sa.Boolean(), nullable=False, default=False),
    *(sa.Column(name, sa.Integer(), nullable=False, default=0) for name in RUN_COUNT_FIELDS),
    # Records a whole-CRM read returned, unless it looked collapsed: the removal's yardstick.
    sa.Column("crm_records", sa.Integer()),
    **TABLE_OPTIONS,
)

AUDIT_FIELDS = tuple(c.name for c in sync_audit.columns if c.name not in ("id", "account_id"))
_AUDIT_FIELD_SET = frozenset(AUDIT_FIELDS)
_AUDIT_COLUMNS = tuple(c.name for c in sync_audit.columns if c.name != "id")  # table order
_AUDIT_LIMITS = tuple(  # (position in AUDIT_FIELDS, length) of the columns that may hold
    # outside values (a raw CRM phone, a group key, the API's codes and ids): cut to fit
    (AUDIT_FIELDS.index(name), sync_audit.c[name].type.length)
    for name in ("partition_key", "phone", "error_code", "remote_id")
)
_I_MESSAGE, _I_CREATED = AUDIT_FIELDS.index("error_message"), AUDIT_FIELDS.index("created_at")
_I_ACCOUNT = _AUDIT_COLUMNS.index("account_id")  # where the store's account goes in a row


# --------------------------------------------------------------------------- engine helpers


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


def _chunks(items: Sequence[T], size: int = _IN_CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _truncate(message: str | None, limit: int = ERROR_MESSAGE_MAX) -> str | None:
    if message is None:
        return None
    message = str(message)
    return message if len(message) <= limit else message[: limit - 1] + "…"


_STATE_FIELDS = {f.name for f in dataclasses.fields(ContactState)}
#: A contact whose last write is settled: no error, intent, rejection, failure or deferral left.
_NOTHING_PENDING: dict[str, Any] = {
    "last_error_code": None,
    "last_error_message": None,
    "rejected_hash": None,
    "failure_count": 0,
    "pending_hash": None,
    "pending_key": None,
    "pending_run_id": None,
    "deferred": 0,
}


# --------------------------------------------------------------------------- migrations

_BEFORE_ACCOUNTS = "erzy_contact_state"
_BEFORE_ACCOUNTS_KEPT = "erzy_contact_state_before_accounts"


def migrate(engine: Engine) -> None:
    """Bring a state database written by an earlier version up to this layout. Idempotent, and
    safe when several processes start at once (each step tolerates another having done it).

    - Contact state keyed by phone alone (``erzy_contact_state``) is copied into
      ``erzy_contacts`` under ``LEGACY_ACCOUNT``: the first account it is proven to describe
      takes it over (``accounts.py``); the old table is kept, renamed, and never read again.
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
        rows = [{k: _aware(v) for k, v in r.items()} for r in found]

    def copy_rows(conn: Connection) -> None:
        insert_ignore(
            conn,
            accounts,
            [{"account_id": LEGACY_ACCOUNT, "label": "before accounts", "created_at": _utcnow()}],
        )
        for chunk in _chunks(rows):
            insert_ignore(conn, contact_state, [{**r, "account_id": LEGACY_ACCOUNT} for r in chunk])

    run_write(engine, copy_rows)
    _try_ddl(engine, f"ALTER TABLE {_BEFORE_ACCOUNTS} RENAME TO {_BEFORE_ACCOUNTS_KEPT}")


def _aware(value: Any) -> Any:
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


# --------------------------------------------------------------------------- the store


class LeaseLost(RuntimeError):
    """This run no longer holds the contact's lease: another run took it over. Nothing is
    written; the contact is planned again by the next run."""


class StateStore:
    """What the sync last confirmed in one ErzyCall account per phone, plus the audit trail and
    the run log.

    ``url`` is a SQLAlchemy URL or an Engine (reused, not disposed by :meth:`close`). Tables
    are created (and older layouts migrated) on construction. Contact state is kept per
    account: :meth:`with_account` gives a store bound to one (``DEFAULT_ACCOUNT`` otherwise).

    Writes about one contact that a run makes while sending are *fenced*: they only happen
    while ``run_id`` holds the contact's lease, else :class:`LeaseLost` is raised.
    """

    def __init__(self, url: str | sa.URL | Engine, account: str = DEFAULT_ACCOUNT) -> None:
        self._engine, self._owned = create_store_engine(url)
        self.account = account
        create_tables(self._engine, metadata)
        migrate(self._engine)

    def with_account(self, account: str, *, take_engine: bool = False) -> StateStore:
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

    def __enter__(self) -> StateStore:
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
        values = {**values, "updated_at": _utcnow()}
        for chunk in _chunks(list(phones)):
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
        stmt = contact_state.update().where(mine).values({**values, "updated_at": _utcnow()})

        def txn(conn: Connection) -> None:
            if not_ours_unless is not None:  # before remote_id is overwritten below
                other = sa.or_(c.remote_id.is_(None), c.remote_id != not_ours_unless)
                conn.execute(
                    contact_state.update().where(mine, other).values(created_by_sync=False)
                )
            if conn.execute(stmt).rowcount != 1:
                raise LeaseLost(f"run {run_id} no longer holds the lease of this contact")

        self._write(txn)

    # ----------------------------------------------------------------- reading state

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
                for chunk in _chunks(wanted):
                    q = query.where(contact_state.c.phone.in_(chunk))
                    rows.extend(conn.execute(q).mappings())
        return {row["phone"]: self._to_state(row) for row in rows}

    @staticmethod
    def _to_state(row: Mapping[str, Any]) -> ContactState:
        values = _decode_state_row(row)
        values["deferred"] = bool(values["deferred"])
        return ContactState(**{k: v for k, v in values.items() if k in _STATE_FIELDS})

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
        return None if row is None else _decode_state_row(row)

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
            yield self._to_state(row), list(_decode_state_row(row)["crm_ids"] or [])

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
                **_NOTHING_PENDING,
            },
        )

    def known_remote_ids(self, limit: int = 3) -> list[tuple[str, str]]:
        """(phone, remote id) of the contacts confirmed most recently: what probing an account
        looks for (see ``accounts.py``)."""
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
            for chunk in _chunks(sorted(set(phones))):
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
        for chunk in _chunks(rows, 5000):
            self._write(lambda conn, chunk=chunk: conn.execute(stmt, list(chunk)))

    def insert_baseline(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add state rows found by ``erzy-pipelines baseline`` for phones the state has no row
        for (an existing row is never overwritten); returns how many were added."""
        now = _utcnow()
        full = [
            {
                "account_id": self.account,
                "phone": r["phone"],
                "remote_id": r["remote_id"],
                "last_payload": _dumps(r["last_payload"]),
                "last_hash": r["last_hash"],
                "crm_ids": _dumps(list(r["crm_ids"])),
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
        for chunk in _chunks(full, 2000):
            self._write(lambda conn, chunk=chunk: insert_ignore(conn, contact_state, chunk))
        return len(full)

    # ----------------------------------------------------------------- leases

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
            .values(lease_run_id=run_id, lease_until=now + lease_seconds, updated_at=_utcnow())
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

    # ----------------------------------------------------------------- outcomes

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
            "last_payload": _dumps(dict(payload)),
            "last_hash": payload_hash,
            "source_fp": source_fp,
            "source_read_at": source_read_at,
            "confirmed_at": time.time(),
            "crm_ids": _dumps(sorted(set(crm_ids))),
            "last_outcome": outcome,
            **_NOTHING_PENDING,
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
            "last_error_message": _truncate(error_message),
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
            for chunk in _chunks(phones):
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
            for chunk in _chunks(phones):
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


    # ----------------------------------------------------------------- audit

    def add_audit(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append audit rows in one transaction. Keys are :data:`AUDIT_FIELDS`; ``crm_ids`` may
        be a string or a list (stored as JSON); ``created_at`` defaults to now (UTC)."""
        values = []
        for row in rows:
            if not _AUDIT_FIELD_SET.issuperset(row):
                raise ValueError(f"unknown audit fields: {sorted(set(row) - _AUDIT_FIELD_SET)}")
            crm_ids = row.get("crm_ids")
            if crm_ids is not None and not isinstance(crm_ids, str):
                row = {**row, "crm_ids": _dumps(list(crm_ids))}
            values.append(tuple(row.get(name) for name in AUDIT_FIELDS))
        self.add_audit_values(values)

    def add_audit_values(self, rows: Sequence[Sequence[Any]]) -> None:
        """Append audit rows given as tuples in :data:`AUDIT_FIELDS` order (``crm_ids`` as
        text, ``created_at`` None for now) in one transaction: the way a run's own results are
        written, a million of them in a first dry run."""
        if not rows:
            return
        now, account = _utcnow(), self.account
        prepared = []
        for row in rows:
            values = list(row)
            if values[_I_MESSAGE] is not None:
                values[_I_MESSAGE] = _truncate(values[_I_MESSAGE])
            if values[_I_CREATED] is None:
                values[_I_CREATED] = now
            for i, length in _AUDIT_LIMITS:  # a too-long raw value must not lose the row
                value = values[i]
                if isinstance(value, str) and len(value) > length:
                    values[i] = value[:length]
            values.insert(_I_ACCOUNT, account)
            prepared.append(values)

        def txn(conn: Connection) -> None:
            for chunk in _chunks(prepared, _WRITE_ROWS):
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
            .where(a.run_id == run_id, a.outcome == "deferred")
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

    # ----------------------------------------------------------------- runs

    def start_run(self, run_id: str, partition_key: str | None, dry_run: bool) -> None:
        """Record a run as running; a retried ``run_id`` is reopened, keeping ``started_at``."""
        reopen = {
            "account_id": self.account,
            "partition_key": partition_key,
            "dry_run": bool(dry_run),
            "status": "running",
            "finished_at": None,
        }

        def txn(conn: Connection) -> None:
            insert_ignore(conn, sync_runs, [{"run_id": run_id, "started_at": _utcnow(), **reopen}])
            conn.execute(sync_runs.update().where(sync_runs.c.run_id == run_id).values(reopen))

        self._write(txn)

    def finish_run(self, run_id: str, counts: Mapping[str, int], status: str) -> None:
        """Close a run with its outcome counts (keys from :data:`RUN_COUNT_FIELDS`)."""
        unknown = set(counts) - set(RUN_COUNT_FIELDS)
        if unknown:
            raise ValueError(f"unknown run counts: {sorted(unknown)}")
        now = _utcnow()
        values = {**{k: int(v) for k, v in counts.items()}, "status": status, "finished_at": now}

        def txn(conn: Connection) -> None:
            insert_ignore(
                conn, sync_runs, [{"run_id": run_id, "started_at": now, "status": status}]
            )
            conn.execute(sync_runs.update().where(sync_runs.c.run_id == run_id).values(values))

        self._write(txn)

    def note_whole_read(self, run_id: str, records: int) -> None:
        """How many records this run's whole-CRM read returned (see ``last_whole_read``)."""

        def txn(conn: Connection) -> None:
            insert_ignore(
                conn, sync_runs, [{"run_id": run_id, "started_at": _utcnow(), "status": "running"}]
            )
            conn.execute(
                sync_runs.update()
                .where(sync_runs.c.run_id == run_id)
                .values(crm_records=records, account_id=self.account)
            )

        self._write(txn)

    def last_whole_read(self) -> int | None:
        """Records the latest whole-CRM read of this account returned that did not look
        collapsed: what the removal compares a read with (``core/removal.py``)."""
        r = sync_runs.c
        query = (
            sa.select(r.crm_records)
            .where(r.account_id == self.account, r.crm_records.is_not(None))
            .order_by(r.started_at.desc(), r.run_id.desc())
            .limit(1)
        )
        with self._engine.connect() as conn:
            return conn.execute(query).scalar()

    def runs(self, limit: int = 20) -> list[dict]:
        """Recorded runs, newest first."""
        query = (
            sa.select(sync_runs)
            .order_by(sync_runs.c.started_at.desc(), sync_runs.c.run_id.desc())
            .limit(limit)
        )
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for row in rows:
            row["dry_run"] = bool(row["dry_run"])
        return rows

    def last_run(self) -> dict | None:
        """The most recently started run, or None."""
        found = self.runs(limit=1)
        return found[0] if found else None


def _decode_state_row(row: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(row)
    for key in ("last_payload", "crm_ids"):
        if values[key] is not None:
            values[key] = json.loads(values[key])
    values["created_by_sync"] = bool(values["created_by_sync"])
    values["crm_ids"] = values["crm_ids"] or []
    return values
