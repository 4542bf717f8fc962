"""Read contacts and group memberships out of any SQLAlchemy database with the user's own SQL.

The user describes their CRM with two queries that return canonical columns (see
``erzy_pipelines/sql/*.sql`` for the sample CRM's). The contacts query is streamed with a
server-side cursor and handed out in chunks, so the CRM is never held in memory; the memberships
query is read once into a ``crm_id -> groups`` map, which is what lets every contact carry *all*
of its groups whichever partition is being synced.

Group selection happens here, in Python, by crm_id: group keys (partition names, which may contain
anything) never become SQL text. The SQL itself runs exactly as written — no bind-parameter or
``%`` processing — so a ``LIKE 'a%'`` or a ``'10:30'`` literal means what it says — in a
session that may only read (``READ_ONLY_SESSION``): the sync can never write to the CRM.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import sqlalchemy as sa

from erzy_pipelines.core.crm_row import Membership, to_record
from erzy_pipelines.core.urls import hide_password

CONTACT_REQUIRED = ("crm_id", "title", "phone")
CONTACT_OPTIONAL = ("email", "notes", "tags", "country", "updated_at")
CUSTOM_PREFIX = "custom_"
MEMBERSHIP_REQUIRED = ("crm_id", "group_key", "erzycall_group_id")
RESERVED_COLUMNS = ("group_keys", "group_ids")
"""Added by the extractor from the memberships query; a contacts query may not return them."""

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
DEFAULT_CONTACTS_SQL = SQL_DIR / "contacts.sql"
DEFAULT_MEMBERSHIPS_SQL = SQL_DIR / "memberships.sql"

FETCH_ROWS = 1000
"""Rows fetched from the database at a time while streaming the contacts query."""


class QueryShapeError(ValueError):
    """A query's columns are not the canonical ones (missing, unknown or repeated)."""


class CrmConnectionError(RuntimeError):
    """The CRM database could not be reached; the message shows the URL, password hidden."""


class SqlQuery(str):
    """SQL text that remembers the file it came from, so errors can point at that file."""

    source: str

    def __new__(cls, text: str, source: str) -> SqlQuery:
        obj = super().__new__(cls, text)
        obj.source = source
        return obj


def read_sql_file(path: str | Path) -> SqlQuery:
    """Read a query from ``path`` (trailing ``;`` removed). Errors name the path."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"SQL file not found: {p} (resolved: {p.resolve()})") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"SQL path is a directory, not a file: {p}") from None
    text = text.strip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    if not text:
        raise QueryShapeError(f"SQL file is empty: {p}")
    return SqlQuery(text, str(p))


def _source(sql: str, default: str) -> str:
    return f"{default} from {sql.source}" if isinstance(sql, SqlQuery) else default


# --------------------------------------------------------------------------------------------
# Connections


def _scrub(text: str, url: sa.URL) -> str:
    """Driver messages rarely echo the password, but "rarely" is not "never"."""
    if url.password:
        password = str(url.password)
        for form in {password, quote(password, safe=""), quote_plus(password, safe="")}:
            text = text.replace(form, "***")
    return text


def connection_failure(url: sa.URL, exc: BaseException, database: str = "the CRM database") -> str:
    """Why connecting to ``database`` at ``url`` failed, in the driver's words: the URL's
    password, and any echo of it, shown as ``***``."""
    orig = getattr(exc, "orig", None) or exc
    detail = _scrub(" ".join(str(orig).split()), url)
    return f"cannot connect to {database} {hide_password(url)}: {detail}"


def _connection_error(url: sa.URL, exc: BaseException) -> CrmConnectionError:
    return CrmConnectionError(connection_failure(url, exc))


def create_crm_engine(url: str | sa.URL, *, check: bool = True,
                      connect_timeout: int = 10) -> sa.Engine:
    """An engine for the CRM with ``pool_pre_ping``; with ``check`` it connects once now so a
    wrong host, port or password fails here with a CrmConnectionError, not deep in a run."""
    if isinstance(url, str) and url.partition("://")[2].split("/", 1)[0].count("@") > 1:
        # A parser would cut the password at its "@" and send the rest as the host name,
        # which drivers then print in their errors.
        raise CrmConnectionError(
            "the password in the CRM database URL holds an '@': URL-encode it (write %40)"
        )
    try:
        sa_url = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise CrmConnectionError(
            "invalid CRM database URL (expected a SQLAlchemy URL such as "
            "postgresql+psycopg://user@host/db)"
        ) from None
    connect_args: dict[str, Any] = {}
    backend = sa_url.get_backend_name()
    # An unreachable host should fail in seconds, not after the OS's TCP timeout.
    if backend in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in sa_url.query:
        connect_args["connect_timeout"] = connect_timeout
    try:
        engine = sa.create_engine(sa_url, pool_pre_ping=True, connect_args=connect_args)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise CrmConnectionError(
            f"cannot use the CRM database URL {hide_password(sa_url)}: "
            f"{_scrub(str(exc), sa_url)}"
        ) from None
    _read_only(engine)
    if check:
        with _connect(engine):
            pass
    return engine


#: How each database is told that a session may only read: the sync never writes to the CRM,
#: and a query that tries to (an UPDATE ... RETURNING, a DELETE, a DDL statement, which
#: MariaDB would otherwise commit by itself) fails with the database's own words.
READ_ONLY_SESSION = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
    "sqlite": "PRAGMA query_only = ON",
}


def _read_only(engine: sa.Engine) -> None:
    """Every connection of this engine reads only, from its first statement (set when the
    driver connects, so no query of the user's ever runs in a session that may write)."""
    statement = READ_ONLY_SESSION.get(engine.url.get_backend_name())
    if statement is None:  # another database: its own permissions are all there is
        return

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        if engine.url.get_backend_name() != "sqlite":
            dbapi_connection.commit()  # the session setting outlives this first transaction


@contextmanager
def _connect(engine: sa.Engine) -> Iterator[sa.Connection]:
    try:
        conn = engine.connect()
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise _connection_error(engine.url, exc) from None
    with conn:
        yield conn


# --------------------------------------------------------------------------------------------
# Query shape


def _columns(result: sa.CursorResult[Any], what: str) -> list[str]:
    keys = result.keys()  # a RMKeyView, not a dict: iterating the result would fetch rows
    names = [str(k).lower() for k in keys]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise QueryShapeError(f"{what} returns repeated column(s): {', '.join(repeated)}")
    return names


def _require(columns: Iterable[str], required: Sequence[str], what: str) -> list[str]:
    """The lower-cased column names; QueryShapeError naming any required one that is missing."""
    cols = [c.lower() for c in columns]
    missing = [c for c in required if c not in cols]
    if missing:
        raise QueryShapeError(
            f"{what} is missing required column(s): {', '.join(missing)} "
            f"(returned: {', '.join(cols) or 'none'}; required: {', '.join(required)})"
        )
    return cols


def check_contact_columns(columns: Iterable[str], what: str = "contacts query") -> None:
    """Raise QueryShapeError unless ``columns`` are canonical contact columns."""
    cols = _require(columns, CONTACT_REQUIRED, what)
    reserved = [c for c in cols if c in RESERVED_COLUMNS]
    if reserved:
        raise QueryShapeError(
            f"{what} returns reserved column(s) {', '.join(reserved)}: group membership comes "
            "from the memberships query"
        )
    unknown = [
        c for c in cols
        if c not in CONTACT_REQUIRED and c not in CONTACT_OPTIONAL
        and not (c.startswith(CUSTOM_PREFIX) and len(c) > len(CUSTOM_PREFIX))
    ]
    if unknown:
        raise QueryShapeError(
            f"{what} returns unknown column(s): {', '.join(unknown)} (optional columns: "
            f"{', '.join(CONTACT_OPTIONAL)}; name a custom field custom_<name>)"
        )


def check_membership_columns(columns: Iterable[str], what: str = "memberships query") -> None:
    """Raise QueryShapeError unless ``columns`` are exactly the membership columns."""
    cols = _require(columns, MEMBERSHIP_REQUIRED, what)
    unknown = [c for c in cols if c not in MEMBERSHIP_REQUIRED]
    if unknown:
        raise QueryShapeError(
            f"{what} returns unknown column(s): {', '.join(unknown)} "
            f"(expected exactly: {', '.join(MEMBERSHIP_REQUIRED)})"
        )


def _run(conn: sa.Connection, sql: str, chunk_size: int) -> sa.CursorResult[Any]:
    """Execute SQL as written, streamed: server-side cursor on PostgreSQL (named cursor) and
    MariaDB (unbuffered cursor); SQLite's cursor is lazy already."""
    streamed = conn.execution_options(
        stream_results=True, yield_per=chunk_size, no_parameters=True
    )
    return streamed.exec_driver_sql(str(sql))


def columns_probe_sql(sql: str) -> str:
    """``sql`` wrapped to return its columns and no row (a newline before ")": the query may
    end with a -- comment)."""
    return f"SELECT * FROM ({sql}\n) erzy_probe WHERE 1 = 0"


def query_columns(engine: sa.Engine, sql: str) -> list[str]:
    """The columns ``sql`` returns, asked of the database without fetching a row (the query
    wrapped as a derived table under ``WHERE 1 = 0``). Database errors are raised as they are,
    in the database's own words; a connection that fails raises CrmConnectionError."""
    what = _source(sql, "query")
    probe = columns_probe_sql(sql)
    with _connect(engine) as conn:
        result = conn.execution_options(no_parameters=True).exec_driver_sql(probe)
        try:
            return _columns(result, what)
        finally:
            result.close()


# --------------------------------------------------------------------------------------------
# Memberships


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def load_memberships(engine: sa.Engine, sql: str,
                     *, chunk_size: int = 10_000) -> dict[str, tuple[Membership, ...]]:
    """Map crm_id -> ((group_key, erzycall_group_id or None), ...), from the memberships query.

    Rows with a NULL crm_id or group_key are ignored (they are outer-join leftovers, not
    memberships); repeated rows are kept once. Built for millions of rows: each distinct
    (group, id) pair and each distinct set of memberships is one shared tuple.
    """
    what = _source(sql, "memberships query")
    building: dict[str, list[Membership]] = {}
    pairs: dict[tuple[Any, Any], Membership | None] = {}  # raw values → cleaned pair
    with _connect(engine) as conn:
        result = _run(conn, sql, chunk_size)
        cols = _columns(result, what)
        check_membership_columns(cols, what)
        i_crm, i_key, i_id = (cols.index(c) for c in MEMBERSHIP_REQUIRED)
        for partition in result.partitions(chunk_size):
            for row in partition:
                crm_id = row[i_crm]
                if crm_id is None:
                    continue
                raw = (row[i_key], row[i_id])
                try:
                    pair = pairs[raw]
                except KeyError:
                    key = _text(raw[0])
                    pair = pairs[raw] = None if key is None else (key, _text(raw[1]))
                except TypeError:  # an unhashable driver value: clean it every time
                    key = _text(raw[0])
                    pair = None if key is None else (key, _text(raw[1]))
                if pair is None:
                    continue
                cid = crm_id if type(crm_id) is str else str(crm_id)
                groups = building.get(cid)
                if groups is None:
                    building[cid] = [pair]
                elif pair not in groups:
                    groups.append(pair)
    shared: dict[tuple[Membership, ...], tuple[Membership, ...]] = {}
    return {
        cid: shared.setdefault(t := tuple(groups), t) for cid, groups in building.items()
    }


def distinct_group_keys_sql(memberships_sql: str) -> str:
    """The memberships query wrapped to return its distinct group keys (a newline before ")":
    the query may end with a -- comment)."""
    return f"SELECT DISTINCT m.group_key FROM ({memberships_sql}\n) m WHERE m.crm_id IS NOT NULL"


def discover_group_keys(engine: sa.Engine, sql: str) -> list[str]:
    """Sorted distinct group keys the memberships query returns (e.g. to define partitions).

    Asks the database for the distinct keys of the query (wrapped as a derived table), so a
    CRM with millions of memberships answers with a few rows; a database that refuses the
    wrapped form is read in full instead."""
    wrapped = distinct_group_keys_sql(sql)
    try:
        with _connect(engine) as conn:
            found = conn.execution_options(no_parameters=True).exec_driver_sql(wrapped)
            keys = {_text(key) for (key,) in found}
        return sorted(k for k in keys if k is not None)
    except sa.exc.DBAPIError:
        pass  # the full read below says what is wrong with the query, if anything
    keys = set()
    for groups in load_memberships(engine, sql).values():
        keys.update(key for key, _ in groups)
    return sorted(keys)


# --------------------------------------------------------------------------------------------
# Contacts


def iter_contact_chunks(
    engine: sa.Engine,
    contacts_sql: str,
    memberships_sql: str | None,
    *,
    groups: Collection[str] | None = None,
    include_ungrouped: bool = True,
    extra_crm_ids: Collection[str] | None = None,
    chunk_size: int = 10_000,
    memberships: Mapping[str, Sequence[Membership]] | None = None,
    between_fetches: Callable[[], None] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Stream the contacts query in chunks of up to ``chunk_size`` row dicts.

    Each row has the query's canonical columns (lower-cased names; ``crm_id`` as text), plus
    ``group_keys`` (sorted, all of the contact's CRM groups) and ``group_ids`` (sorted unique
    ErzyCall ids of those groups). ``groups=None`` yields every contact; otherwise only contacts
    in at least one of ``groups``, plus contacts in no group at all when ``include_ungrouped``,
    plus any contact whose crm_id is in ``extra_crm_ids`` (e.g. one that just left the selected
    groups and must lose them remotely). ``memberships_sql=None`` means the CRM has no groups;
    ``memberships`` (from :func:`load_memberships`) saves reading them again.
    ``between_fetches`` is called after each fetch from the database (at most ``FETCH_ROWS``
    rows), e.g. to stop a slow extraction on request: it may raise.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if memberships is None:
        memberships = load_memberships(engine, memberships_sql) if memberships_sql else {}
    selected = None if groups is None else frozenset(str(g) for g in groups)
    extra = frozenset(str(i) for i in extra_crm_ids or ())

    chunk: list[dict[str, Any]] = []
    for cols, rows in raw_contact_batches(
        engine, contacts_sql, fetch=min(chunk_size, FETCH_ROWS), between_fetches=between_fetches
    ):
        i_crm = cols.index("crm_id")
        for row in rows:
            raw_id = row[i_crm]
            crm_id = None if raw_id is None else str(raw_id)
            member_of = memberships.get(crm_id, ()) if crm_id is not None else ()
            if selected is not None and crm_id not in extra:
                if member_of:
                    if not any(key in selected for key, _ in member_of):
                        continue
                elif not include_ungrouped:
                    continue
            chunk.append(to_record(cols, row, crm_id, member_of))
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def raw_contact_batches(
    engine: sa.Engine,
    contacts_sql: str,
    *,
    fetch: int = FETCH_ROWS,
    between_fetches: Callable[[], None] | None = None,
) -> Iterator[tuple[list[str], Sequence[Sequence[Any]]]]:
    """Stream the contacts query as (columns, rows) batches of raw row tuples, the columns
    checked; ``between_fetches`` is called after each fetch (it may raise to stop)."""
    what = _source(contacts_sql, "contacts query")
    with _connect(engine) as conn:
        result = _run(conn, contacts_sql, fetch)
        cols = _columns(result, what)
        check_contact_columns(cols, what)
        for partition in result.partitions(fetch):
            if between_fetches is not None:
                between_fetches()
            yield cols, partition


def group_keys_of(memberships: Mapping[str, Sequence[Membership]]) -> set[str]:
    """Every group key the memberships query returned."""
    return {key for groups in memberships.values() for key, _ in groups}
