"""What ``erzy-pipelines sync`` checks before it launches anything, beyond the settings' own
rules (``SyncConfig.validate``, run when the definitions load): that the key looks like an
ErzyCall key, that both SQL files can be read, that the CRM answers and its queries return the
columns the sync needs (asked without fetching a row, in a read-only session), and that the
state database can be reached. Each failure is one sentence naming the environment variable,
in the database's own words where the database refused; nothing is launched or written.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from erzy_pipelines.crm.extract import (
    CrmConnectionError,
    QueryShapeError,
    SqlQuery,
    check_contact_columns,
    check_membership_columns,
    connection_failure,
    create_crm_engine,
    query_columns,
    read_sql_file,
)
from erzy_pipelines.erzycall.secret import Secret
from erzy_pipelines.settings import env


class Refused(Exception):
    """A setting that cannot work; the message names it and says what would be right."""


def preflight() -> None:
    """Raise ``Refused`` at the first setting of the environment sync that cannot work."""
    if not Secret(env("ERZYCALL_API_KEY")).prefix:
        raise Refused(
            "ERZYCALL_API_KEY: not an ErzyCall API key (they start with ek_live_ or ek_test_; "
            "the value is not shown)"
        )
    contacts = _sql("CRM_CONTACTS_SQL")
    memberships = _sql("CRM_MEMBERSHIPS_SQL")
    try:
        engine = create_crm_engine(env("CRM_DATABASE_URL"))
    except CrmConnectionError as exc:
        raise Refused(f"CRM_DATABASE_URL: {exc}") from None
    try:
        _columns("CRM_CONTACTS_SQL", engine, contacts, check_contact_columns)
        _columns("CRM_MEMBERSHIPS_SQL", engine, memberships, check_membership_columns)
    finally:
        engine.dispose()
    _state_reachable(env("ERZY_STATE_DATABASE_URL"))


def _sql(variable: str) -> SqlQuery:
    try:
        return read_sql_file(Path(env(variable)))
    except (OSError, QueryShapeError) as exc:
        raise Refused(f"{variable}: {exc}") from None
    except UnicodeDecodeError:
        raise Refused(f"{variable}: {env(variable)} is not a UTF-8 text file") from None


def _columns(variable: str, engine: sa.Engine, sql: SqlQuery, check) -> None:  # noqa: ANN001
    try:
        check(query_columns(engine, sql), f"the query in {sql.source}")
    except QueryShapeError as exc:
        raise Refused(f"{variable}: {exc}") from None
    except CrmConnectionError as exc:
        raise Refused(f"CRM_DATABASE_URL: {exc}") from None
    except sa.exc.DBAPIError as exc:
        words = " ".join(str(exc.orig).split())
        raise Refused(
            f"{variable}: the CRM database refused the query in {sql.source}: {words}"
        ) from None


def _state_reachable(url: str) -> None:
    """The state database answers (a SQLite file's folder exists); nothing is created."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise Refused(
            "ERZY_STATE_DATABASE_URL: not a SQLAlchemy URL (e.g. sqlite:///data/sync_state.sqlite "
            "or postgresql+psycopg://user@host/db)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        folder = Path(parsed.database or ".").expanduser().resolve().parent
        if parsed.database and not folder.is_dir():
            raise Refused(f"ERZY_STATE_DATABASE_URL: the folder {folder} does not exist")
        return
    engine = sa.create_engine(parsed, connect_args={"connect_timeout": 10})
    try:
        with engine.connect():
            pass
    except (sa.exc.DBAPIError, sa.exc.NoSuchModuleError, ImportError) as exc:
        failure = connection_failure(parsed, exc, "the state database")
        raise Refused(f"ERZY_STATE_DATABASE_URL: {failure}") from None
    finally:
        engine.dispose()
