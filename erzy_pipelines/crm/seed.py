"""A sample CRM with the mess real CRMs have, so every demo and test has something to chew on.

``seed_demo_crm`` writes a small, plausible CRM schema (companies, people, phone_numbers,
crm_groups, group_memberships) to any SQLAlchemy URL. The data is generated from
``random.Random(seed)`` alone, so a seed always gives the same rows on every database, and it is
deliberately dirty: phone numbers typed by humans in national and international formats from
several countries, extensions, the same person entered twice, invalid numbers, Unicode and missing
names, notes over the API's 5,000 characters, too many and too long tags, bad e-mails, people in
several groups and in none. Names, companies and e-mails are made up (e-mails use the reserved
example.* domains); phone numbers are random numbers in ranges ``phonenumbers`` accepts.

Rows are generated and inserted one batch at a time, so seeding a million people keeps memory flat.

This module is the entry point (seed, ensure, ``python -m``); the tables live in ``schema``, the
rows in ``sample_people`` and the random values in ``sample_values``. Their public names are
re-exported here, where callers have always found them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from erzy_pipelines.core.urls import hide_password
from erzy_pipelines.demo import DEMO_GROUPS

from .sample_people import (
    BATCH_SIZE,
    CRM_GROUPS,
    INTERNAL_GROUP_KEY,
    company_rows,
    people_batches,
)
from .sample_schema import (
    DEMO_TABLES,
    companies,
    crm_groups,
    group_memberships,
    metadata,
    people,
    phone_numbers,
)
from .sample_values import SampleValues

__all__ = [
    "BATCH_SIZE",
    "CRM_GROUPS",
    "DEFAULT_DEMO_CRM_PATH",
    "DEFAULT_DEMO_CRM_URL",
    "DEMO_GROUPS",
    "DEMO_TABLES",
    "INTERNAL_GROUP_KEY",
    "DemoCrmExistsError",
    "SeedSummary",
    "companies",
    "crm_groups",
    "ensure_demo_crm",
    "group_memberships",
    "seed_command",
    "metadata",
    "people",
    "phone_numbers",
    "seed_demo_crm",
]

DEFAULT_DEMO_CRM_PATH = Path("data") / "demo_crm.sqlite"
"""Where the CLI puts the demo CRM, relative to the current directory."""

DEFAULT_DEMO_CRM_URL = f"sqlite:///{DEFAULT_DEMO_CRM_PATH.as_posix()}"


@dataclass(frozen=True)
class SeedSummary:
    """What a seed wrote (or found, when ``created`` is False); ``url`` has its password hidden."""

    url: str
    people: int
    phone_numbers: int
    groups: int
    memberships: int
    companies: int = 0
    created: bool = True


class DemoCrmExistsError(ValueError):
    """The demo schema is already there and ``replace=False`` was asked for."""


def _prepare_sqlite_path(url: sa.URL) -> None:
    """SQLite creates the file but not its folder; create the folder so a fresh checkout works."""
    if url.get_backend_name() != "sqlite":
        return
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _schema_present(conn: sa.Connection) -> bool:
    inspector = sa.inspect(conn)
    return all(inspector.has_table(name) for name in DEMO_TABLES)


def _count(conn: sa.Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _summary(conn: sa.Connection, url: sa.URL, created: bool) -> SeedSummary:
    return SeedSummary(
        url=hide_password(url),
        people=_count(conn, people),
        phone_numbers=_count(conn, phone_numbers),
        groups=_count(conn, crm_groups),
        memberships=_count(conn, group_memberships),
        companies=_count(conn, companies),
        created=created,
    )


def _reset_sequences(conn: sa.Connection) -> None:
    """Explicit ids leave PostgreSQL sequences at 1; move them past the seeded rows so rows
    added later by hand (demos: "add a person and watch it sync") get fresh ids."""
    if conn.dialect.name != "postgresql":
        return
    for table in (companies, people, phone_numbers, crm_groups):
        conn.execute(sa.text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
        ))


def seed_demo_crm(url: str, rows: int = 1000, seed: int = 0, *, replace: bool = True,
                  batch_size: int = BATCH_SIZE) -> SeedSummary:
    """Create the sample CRM at ``url`` with ``rows`` people generated from ``seed``.

    ``replace=True`` drops the demo tables first; ``replace=False`` refuses (DemoCrmExistsError)
    when they already exist. Only the five demo tables are touched.
    """
    if rows < 0:
        raise ValueError("rows must be >= 0")
    sa_url = sa.make_url(url)
    _prepare_sqlite_path(sa_url)
    engine = sa.create_engine(sa_url)
    try:
        with engine.begin() as conn:
            if _schema_present(conn) and not replace:
                raise DemoCrmExistsError(
                    f"the demo CRM already exists at {hide_password(sa_url)}"
                    "; pass replace=True to recreate it"
                )
            metadata.drop_all(conn, checkfirst=True)
            metadata.create_all(conn)

            gen = SampleValues(seed)
            group_rows = [
                {"id": i, "group_key": key, "name": name, "erzycall_group_id": gid}
                for i, (key, name, gid, _) in enumerate(CRM_GROUPS, start=1)
            ]
            conn.execute(crm_groups.insert(), group_rows)
            n_companies = max(5, rows // 25)
            for chunk in company_rows(gen, n_companies):
                conn.execute(companies.insert(), chunk)
            for batch in people_batches(gen, rows, n_companies, group_rows, batch_size):
                conn.execute(people.insert(), batch.people)
                if batch.phones:
                    conn.execute(phone_numbers.insert(), batch.phones)
                if batch.memberships:
                    conn.execute(group_memberships.insert(), batch.memberships)
            _reset_sequences(conn)
            return _summary(conn, sa_url, created=True)
    finally:
        engine.dispose()


def ensure_demo_crm(url: str, rows: int = 1000, seed: int = 0) -> SeedSummary:
    """Seed the demo CRM unless its tables are already there (then report what is there)."""
    sa_url = sa.make_url(url)
    _prepare_sqlite_path(sa_url)
    engine = sa.create_engine(sa_url)
    try:
        with engine.connect() as conn:
            if _schema_present(conn):
                return _summary(conn, sa_url, created=False)
    finally:
        engine.dispose()
    return seed_demo_crm(url, rows, seed, replace=True)


def seed_command(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    """``python -m erzy_pipelines.crm.seed``: write the demo CRM (SQLite file by default)."""
    parser = argparse.ArgumentParser(description=seed_command.__doc__)
    parser.add_argument("--url", default=DEFAULT_DEMO_CRM_URL, help="SQLAlchemy URL")
    parser.add_argument("--rows", type=int, default=1000, help="number of people")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="only seed if the schema is missing")
    args = parser.parse_args(argv)
    if args.keep:
        summary = ensure_demo_crm(args.url, args.rows, args.seed)
    else:
        summary = seed_demo_crm(args.url, args.rows, args.seed)
    verb = "seeded" if summary.created else "kept existing"
    out(f"{verb} {summary.url}: {summary.people} people, {summary.phone_numbers} phone numbers, "
        f"{summary.groups} groups, {summary.memberships} memberships")
    return 0


if __name__ == "__main__":
    raise SystemExit(seed_command())
