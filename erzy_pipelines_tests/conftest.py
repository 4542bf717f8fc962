"""Shared fixtures: fresh databases on the machine's servers and a live sandbox API.

Database fixtures create a uniquely named database per test and drop it afterwards. Without
``CI=true`` a server that is not reachable skips its tests; with ``CI=true`` it fails them, so a
database test can never silently disappear from CI.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "ERZY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get(
    "ERZY_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SERVER_DB_FIXTURES = {"pg_url", "mariadb_url"}
SERVER_DB_PARAMS = SERVER_DB_FIXTURES | {"postgresql", "mariadb"}  # any_db_url's params


def _uses_server_database(item: pytest.Item) -> bool:
    """The test asks for a PostgreSQL or MariaDB database: by fixture name, through
    ``any_db_url``'s postgresql/mariadb params, or through a parameter naming one of the fixtures
    (``request.getfixturevalue(db)``)."""
    if SERVER_DB_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec else ()
    return any(isinstance(v, str) and v in SERVER_DB_PARAMS for v in params)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a database server ``db``, so ``-m db`` / ``-m "not db"``
    select them."""
    for item in items:
        if _uses_server_database(item):
            item.add_marker(pytest.mark.db)


def _unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable: {exc.__class__.__name__}: {exc}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: database tests must run)")
    pytest.skip(message)


def _fresh_database(admin_url: str, what: str) -> Iterator[str]:
    name = f"erzy_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(what, exc)
    url = admin.url.set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy URL, psycopg driver)."""
    yield from _fresh_database(PG_ADMIN_URL, "PostgreSQL")


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database (SQLAlchemy URL, pymysql driver)."""
    yield from _fresh_database(MARIADB_ADMIN_URL, "MariaDB")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file database."""
    return f"sqlite:///{tmp_path / 'crm.sqlite'}"


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite, PostgreSQL and MariaDB."""
    fixture = {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}
    return request.getfixturevalue(fixture[request.param])


@pytest.fixture
def sandbox():
    """A running sandbox API on 127.0.0.1 with generous limits, stopped after the test."""
    from erzy_pipelines.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(SandboxConfig(limits=((10_000, 60.0), (100_000, 3600.0)))).start()
    try:
        yield server
    finally:
        server.stop()


def pytest_configure(config: pytest.Config) -> None:
    """The session (not an xdist worker) picks the file every process records fault-matrix
    rows in, so the table is whole however the tests are distributed."""
    from erzy_pipelines_tests.faults import report

    if not hasattr(config, "workerinput") and report.REPORT_ENV not in os.environ:
        fd, path = tempfile.mkstemp(prefix="erzy-fault-report-", suffix=".jsonl")
        os.close(fd)
        os.environ[report.REPORT_ENV] = path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from erzy_pipelines_tests.faults import report

    lines = report.render()
    if not lines:
        return
    terminalreporter.section("fault matrix")
    for line in lines:
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    from erzy_pipelines_tests.faults import report

    if not hasattr(config, "workerinput") and os.environ.get(report.REPORT_ENV):
        Path(os.environ.pop(report.REPORT_ENV)).unlink(missing_ok=True)
