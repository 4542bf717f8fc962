"""Extraction from real SQLite, PostgreSQL and MariaDB databases seeded with the sample CRM."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from erzy_pipelines.crm import seed as seed_mod
from erzy_pipelines.crm.extract import (
    CONTACT_OPTIONAL,
    CONTACT_REQUIRED,
    DEFAULT_CONTACTS_SQL,
    DEFAULT_MEMBERSHIPS_SQL,
    CrmConnectionError,
    QueryShapeError,
    create_crm_engine,
    discover_group_keys,
    distinct_group_keys_sql,
    iter_contact_chunks,
    load_memberships,
    read_sql_file,
)
from erzy_pipelines.crm.seed import seed_demo_crm

ROWS = 400
CONTACTS = read_sql_file(DEFAULT_CONTACTS_SQL)
MEMBERSHIPS = read_sql_file(DEFAULT_MEMBERSHIPS_SQL)
NASTY_KEY = "o'brien; DROP TABLE people;--"


@pytest.fixture
def crm(any_db_url: str) -> Iterator[sa.Engine]:
    seed_demo_crm(any_db_url, rows=ROWS, seed=11)
    engine = create_crm_engine(any_db_url)
    yield engine
    engine.dispose()


def expected_memberships(engine: sa.Engine) -> dict[str, set[tuple[str, str | None]]]:
    g, m = seed_mod.crm_groups, seed_mod.group_memberships
    query = sa.select(m.c.person_id, g.c.group_key, g.c.erzycall_group_id).join(
        g, g.c.id == m.c.group_id)
    out: dict[str, set[tuple[str, str | None]]] = {}
    with engine.connect() as conn:
        for person_id, key, gid in conn.execute(query):
            out.setdefault(str(person_id), set()).add((key, gid))
    return out


def all_rows(engine: sa.Engine, **kwargs: object) -> list[dict]:
    return [row for chunk in iter_contact_chunks(engine, CONTACTS, MEMBERSHIPS, **kwargs)
            for row in chunk]


def test_streams_canonical_rows_with_all_memberships(crm: sa.Engine) -> None:
    chunks = list(iter_contact_chunks(crm, CONTACTS, MEMBERSHIPS, chunk_size=90))
    assert [len(c) for c in chunks] == [90, 90, 90, 90, 40]
    rows = [r for c in chunks for r in c]
    expected_cols = {*CONTACT_REQUIRED, *CONTACT_OPTIONAL, "custom_company", "group_keys",
                     "group_ids"}
    assert all(set(r) == expected_cols for r in rows)
    assert [r["crm_id"] for r in rows] == [str(i) for i in range(1, ROWS + 1)]
    assert all(isinstance(r["updated_at"], datetime) for r in rows)

    expected = expected_memberships(crm)
    for r in rows:
        groups = expected.get(r["crm_id"], set())
        assert r["group_keys"] == sorted(k for k, _ in groups)
        assert r["group_ids"] == sorted({gid for _, gid in groups if gid})
    assert any(len(r["group_keys"]) > 1 for r in rows)
    assert any("internal-staff" in r["group_keys"] and not r["group_ids"] for r in rows)

    with crm.connect() as conn:
        primaries = dict(conn.execute(sa.select(
            seed_mod.phone_numbers.c.person_id, seed_mod.phone_numbers.c.number
        ).where(seed_mod.phone_numbers.c.is_primary == 1)).all())
    assert {r["crm_id"]: r["phone"] for r in rows if r["phone"] is not None} == {
        str(k): v for k, v in primaries.items()}
    assert any(r["phone"] is None for r in rows)  # people without a number still come through


def test_group_filter_keeps_full_memberships(crm: sa.Engine) -> None:
    everyone = all_rows(crm)
    vip = all_rows(crm, groups=["vip"], include_ungrouped=False)
    vip_or_none = all_rows(crm, groups=["vip"], include_ungrouped=True)
    ungrouped = [r for r in everyone if not r["group_keys"]]

    assert vip and all("vip" in r["group_keys"] for r in vip)
    assert {r["crm_id"] for r in vip} == {
        r["crm_id"] for r in everyone if "vip" in r["group_keys"]}
    assert any(len(r["group_ids"]) > 1 for r in vip)  # other groups still attached
    assert len(vip_or_none) == len(vip) + len(ungrouped)
    assert all_rows(crm, groups=[], include_ungrouped=False) == []
    outsider = next(r for r in everyone if r["group_keys"] and "vip" not in r["group_keys"])
    with_extra = all_rows(crm, groups=["vip"], include_ungrouped=False,
                          extra_crm_ids=[outsider["crm_id"]])
    assert {r["crm_id"] for r in with_extra} == {r["crm_id"] for r in vip} | {outsider["crm_id"]}
    assert len(all_rows(crm, groups=["vip", "trial"], include_ungrouped=False)) == sum(
        1 for r in everyone if {"vip", "trial"} & set(r["group_keys"]))


def test_group_key_with_sql_metacharacters_is_only_data(crm: sa.Engine) -> None:
    writer = sa.create_engine(crm.url)  # the CRM engine itself only reads
    with writer.begin() as conn:
        conn.execute(seed_mod.crm_groups.insert().values(
            id=99, group_key=NASTY_KEY, name="Nasty", erzycall_group_id="grp_vip"))
        conn.execute(seed_mod.group_memberships.insert(),
                     [{"person_id": pid, "group_id": 99} for pid in (3, 5, 8)])
    writer.dispose()

    assert NASTY_KEY in discover_group_keys(crm, MEMBERSHIPS)
    rows = all_rows(crm, groups=[NASTY_KEY], include_ungrouped=False)
    assert [r["crm_id"] for r in rows] == ["3", "5", "8"]
    assert all(NASTY_KEY in r["group_keys"] and "grp_vip" in r["group_ids"] for r in rows)
    with crm.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(seed_mod.people)
                            ).scalar_one() == ROWS


def test_sql_runs_as_written_and_early_stop_releases_the_cursor(crm: sa.Engine) -> None:
    sql = ("SELECT id AS CRM_ID, display_name AS Title, notes AS phone FROM people "
           "WHERE display_name LIKE '%a%' OR notes = 'at 10:30' ORDER BY id")
    stream = iter_contact_chunks(crm, sql, None, chunk_size=10)
    first = next(stream)
    assert len(first) == 10 and all("a" in r["title"].lower() for r in first)
    assert set(first[0]) == {"crm_id", "title", "phone", "group_keys", "group_ids"}
    stream.close()  # abandon a streamed result mid-way: the connection must come back clean
    assert len(load_memberships(crm, MEMBERSHIPS)) > 100


def test_memberships_and_group_keys(crm: sa.Engine) -> None:
    memberships = load_memberships(crm, MEMBERSHIPS)
    expected = expected_memberships(crm)
    assert {k: set(v) for k, v in memberships.items()} == expected
    assert all(isinstance(k, str) for k in memberships)
    assert discover_group_keys(crm, MEMBERSHIPS) == sorted(
        key for key, _, _, _ in seed_mod.CRM_GROUPS)
    # The database answers the distinct keys itself (no full read), on every backend.
    with crm.connect() as conn:
        found = conn.exec_driver_sql(distinct_group_keys_sql(MEMBERSHIPS)).scalars().all()
    assert sorted(found) == discover_group_keys(crm, MEMBERSHIPS)


def test_missing_columns_fail_at_once_naming_column_and_file(sqlite_url: str,
                                                            tmp_path: Path) -> None:
    seed_demo_crm(sqlite_url, rows=30)
    engine = create_crm_engine(sqlite_url)
    bad = tmp_path / "my_contacts.sql"
    bad.write_text("SELECT id AS crm_id, display_name AS title FROM people;\n")
    with pytest.raises(QueryShapeError, match=r"missing required column\(s\): phone") as err:
        next(iter_contact_chunks(engine, read_sql_file(bad), MEMBERSHIPS))
    assert "my_contacts.sql" in str(err.value)

    with pytest.raises(QueryShapeError, match="erzycall_group_id"):
        load_memberships(engine, "SELECT person_id AS crm_id, group_id AS group_key "
                                 "FROM group_memberships")
    with pytest.raises(QueryShapeError, match="unknown column.*emial.*custom_<name>"):
        next(iter_contact_chunks(engine, "SELECT id AS crm_id, display_name AS title, "
                                         "notes AS phone, email AS emial FROM people", None))
    with pytest.raises(QueryShapeError, match="reserved"):
        next(iter_contact_chunks(engine, "SELECT id AS crm_id, display_name AS title, "
                                         "notes AS phone, tags AS group_keys FROM people", None))
    engine.dispose()


def test_read_sql_file(tmp_path: Path) -> None:
    path = tmp_path / "q.sql"
    path.write_text("SELECT 1 AS crm_id ;\n\n")
    query = read_sql_file(path)
    assert query == "SELECT 1 AS crm_id" and query.source == str(path)
    with pytest.raises(FileNotFoundError, match="nope.sql"):
        read_sql_file(tmp_path / "nope.sql")
    assert "FROM people" in CONTACTS and not CONTACTS.endswith(";")


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://crm_user:s3cr3t-Pa55@127.0.0.1:1/crm",
    "mysql+pymysql://crm_user:s3cr3t-Pa55@127.0.0.1:1/crm",
])
def test_unreachable_database_error_hides_password(url: str) -> None:
    with pytest.raises(CrmConnectionError) as err:
        create_crm_engine(url)
    message = str(err.value)
    assert "s3cr3t-Pa55" not in message and "***" in message
    assert "127.0.0.1" in message
    assert err.value.__cause__ is None


def test_missing_sqlite_directory_is_a_connection_error(tmp_path: Path) -> None:
    with pytest.raises(CrmConnectionError, match="cannot connect"):
        create_crm_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'crm.db'}")
    with pytest.raises(CrmConnectionError, match="invalid CRM database URL"):
        create_crm_engine("not a url at all")


def _writes(backend: str) -> dict[str, str]:
    """Queries that try to write, as a user might mistype or paste them: each must fail."""
    returning = "RETURNING id AS crm_id, display_name AS title, display_name AS phone"
    update = f"UPDATE people SET display_name = 'overwritten' {returning}"
    if backend == "mysql":  # MariaDB has no UPDATE ... RETURNING
        update = "UPDATE people SET display_name = 'overwritten'"
    return {
        "update": update,
        "delete": f"DELETE FROM people WHERE id > 0 {returning}",
        "ddl": "CREATE TABLE erzy_intruder AS SELECT id AS crm_id FROM people",
    }


def _crm_as_it_is(url: str) -> tuple[int, int, bool]:
    """(people, people still named as seeded, whether a table was created), read by a plain
    engine of the test's own."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            people = conn.exec_driver_sql("SELECT COUNT(*) FROM people").scalar_one()
            renamed = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM people WHERE display_name = 'overwritten'"
            ).scalar_one()
        return people, renamed, sa.inspect(engine).has_table("erzy_intruder")
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["update", "delete", "ddl"])
def test_a_query_that_writes_fails_and_the_crm_is_unchanged(any_db_url: str, kind: str) -> None:
    """Through the functions that read the CRM, and on any connection of the CRM engine (so a
    path that does not stream, where PostgreSQL's cursor would not refuse it first, is covered
    too): the database refuses the write in its own words."""
    seed_demo_crm(any_db_url, rows=30, seed=3)
    before = _crm_as_it_is(any_db_url)
    engine = create_crm_engine(any_db_url)
    sql = _writes(engine.url.get_backend_name())[kind]
    try:
        with pytest.raises(sa.exc.DBAPIError):
            list(iter_contact_chunks(engine, sql, None))
        with pytest.raises(sa.exc.DBAPIError):
            load_memberships(engine, sql)
        with pytest.raises(sa.exc.DBAPIError) as refused, engine.connect() as conn:
            conn.exec_driver_sql(sql)
            conn.commit()
    finally:
        engine.dispose()
    words = str(refused.value.orig).lower()
    assert "read-only" in words or "read only" in words or "readonly" in words, words
    assert _crm_as_it_is(any_db_url) == before == (30, 0, False)
