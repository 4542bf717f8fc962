"""The sample CRM: same rows for a seed on every database, and the promised mess is there."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import sqlalchemy as sa

from erzy_pipelines.crm import seed as seed_mod
from erzy_pipelines.crm.seed import (
    DEFAULT_DEMO_CRM_PATH,
    DEFAULT_DEMO_CRM_URL,
    DEMO_GROUPS,
    DemoCrmExistsError,
    ensure_demo_crm,
    seed_demo_crm,
)

TABLES = (seed_mod.companies, seed_mod.people, seed_mod.phone_numbers, seed_mod.crm_groups,
          seed_mod.group_memberships)


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every demo table's rows in key order, typed by the Table definitions."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: [tuple(r) for r in conn.execute(
                    sa.select(t).order_by(*t.primary_key.columns))]
                for t in TABLES
            }
    finally:
        engine.dispose()


def test_seed_gives_the_same_rows_on_every_database(any_db_url: str, tmp_path: Path) -> None:
    summary = seed_demo_crm(any_db_url, rows=300, seed=7)

    rows = dump(any_db_url)
    assert (summary.people, summary.phone_numbers, summary.groups, summary.memberships) == (
        len(rows["people"]), len(rows["phone_numbers"]), len(rows["crm_groups"]),
        len(rows["group_memberships"]))
    assert summary.people == 300 and summary.groups == 8 and summary.created
    # Unicode, datetimes and long notes survive each database unchanged: compare with SQLite.
    reference = f"sqlite:///{tmp_path / 'reference.sqlite'}"
    seed_demo_crm(reference, rows=300, seed=7)
    assert rows == dump(reference)
    names = " ".join(r[1] or "" for r in rows["people"])
    assert re.search(r"[\u4e00-\u9fff]", names), "CJK names expected"
    assert re.search(r"[\u0590-\u06ff]", names), "Arabic/Hebrew names expected"


def test_seeded_ids_leave_room_for_rows_added_later(any_db_url: str) -> None:
    seed_demo_crm(any_db_url, rows=50, seed=1)
    engine = sa.create_engine(any_db_url)
    try:
        with engine.begin() as conn:
            added = conn.execute(seed_mod.people.insert().values(
                display_name="Added Later", updated_at=datetime(2026, 1, 1)))
            assert added.inserted_primary_key[0] == 51
    finally:
        engine.dispose()


def test_same_seed_same_rows_other_seed_other_rows(tmp_path: Path) -> None:
    url_a, url_b, url_c = (f"sqlite:///{tmp_path / n}" for n in ("a.db", "b.db", "c.db"))
    seed_demo_crm(url_a, rows=500, seed=3)
    seed_demo_crm(url_b, rows=500, seed=3)
    seed_demo_crm(url_c, rows=500, seed=4)
    assert dump(url_a) == dump(url_b)
    assert dump(url_a)["people"] != dump(url_c)["people"]
    assert dump(url_a)["phone_numbers"] != dump(url_c)["phone_numbers"]


def test_replace_false_refuses_and_ensure_keeps_existing(sqlite_url: str) -> None:
    first = ensure_demo_crm(sqlite_url, rows=40, seed=2)
    assert first.created and first.people == 40
    with pytest.raises(DemoCrmExistsError, match="replace=True"):
        seed_demo_crm(sqlite_url, rows=10, replace=False)
    kept = ensure_demo_crm(sqlite_url, rows=999, seed=5)
    assert not kept.created and kept.people == 40
    assert seed_demo_crm(sqlite_url, rows=10).people == 10


def test_summary_hides_the_password(pg_url: str) -> None:
    url = sa.make_url(pg_url).set(password="hunter2-secret")  # trust auth ignores it
    summary = seed_demo_crm(url.render_as_string(hide_password=False), rows=5)
    assert "hunter2-secret" not in summary.url and "***" in summary.url
    assert "hunter2-secret" not in repr(summary)


def test_cli_default_writes_sqlite_file_under_data(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    assert seed_mod.seed_command(["--rows", "20"], out=lines.append) == 0
    assert (tmp_path / DEFAULT_DEMO_CRM_PATH).is_file()
    assert DEFAULT_DEMO_CRM_URL.endswith("data/demo_crm.sqlite")
    assert "20 people" in lines[0]
    seed_mod.seed_command(["--rows", "5", "--keep"], out=lines.append)
    assert lines[1].startswith("kept existing") and "20 people" in lines[1]


def test_groups_map_to_the_demo_erzycall_groups(sqlite_url: str) -> None:
    seed_demo_crm(sqlite_url, rows=10)
    groups = dump(sqlite_url)["crm_groups"]
    mapped = {g[3] for g in groups if g[3] is not None}
    assert mapped == {gid for gid, _ in DEMO_GROUPS}
    unsent = [g[1] for g in groups if g[3] is None]
    assert unsent == ["internal-staff"]


# --------------------------------------------------------------------------------------------
# The mess, counted in a 1,000-person seed


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('messy') / 'crm.sqlite'}"
    seed_demo_crm(url, rows=1000, seed=0)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        people = {r.id: r for r in conn.execute(sa.select(seed_mod.people))}
        phones = list(conn.execute(sa.select(seed_mod.phone_numbers)))
        memberships = list(conn.execute(sa.select(seed_mod.group_memberships)))
        groups = {r.id: r.group_key for r in conn.execute(sa.select(seed_mod.crm_groups))}
    engine.dispose()
    return {"people": people, "phones": phones, "memberships": memberships, "groups": groups}


def _parse(number: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        parsed = phonenumbers.parse(number, region or "US")
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_valid_number(parsed) else None


def test_phone_numbers_are_mostly_valid_with_deliberate_invalid_ones(messy: dict[str, Any]) -> None:
    people = messy["people"]
    primary = [p for p in messy["phones"] if p.is_primary == 1]
    parsed = [_parse(p.number, people[p.person_id].country) for p in primary]
    invalid = sum(1 for x in parsed if x is None)
    assert 15 <= invalid <= 60  # ~3% of 1,000
    assert len(primary) >= 970  # ~1% of people have no number at all
    assert len({p.person_id for p in primary}) == len(primary)  # one primary each
    secondary = [p for p in messy["phones"] if p.is_primary == 0]
    assert secondary and all(_parse(p.number, people[p.person_id].country) for p in secondary)
    regions = Counter(phonenumbers.region_code_for_number(x) for x in parsed if x)
    assert {"US", "GB", "DE", "FR", "BR", "IN", "JP"} <= set(regions)
    texts = [p.number for p in primary]
    assert sum(t.startswith("+") for t in texts) >= 100  # international
    assert sum(t[:1].isdigit() or t.startswith("(") for t in texts) >= 100  # national
    assert any(t.startswith(("00", "011 ")) for t in texts)  # exit prefixes


def test_extensions_duplicates_names_notes_tags_emails(messy: dict[str, Any]) -> None:
    people = messy["people"]
    primary = [p for p in messy["phones"] if p.is_primary == 1]

    with_ext = [p for p in primary if re.search(r"(x|ext\.?)\s*\d+$", p.number, re.I)]
    assert len(with_ext) >= 10

    by_phone: dict[str, list[int]] = {}
    for p in primary:
        parsed = _parse(p.number, people[p.person_id].country)
        if parsed:
            e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            by_phone.setdefault(e164, []).append(p.person_id)
    dup_sets = [ids for ids in by_phone.values() if len(ids) > 1]
    assert len(dup_sets) >= 25  # ~5%
    differently_typed = [
        ids for ids in dup_sets
        if len({p.number for p in primary if p.person_id in ids}) > 1
    ]
    assert differently_typed
    assert all(len({people[i].updated_at for i in ids}) > 1 for ids in dup_sets)

    missing = [p for p in people.values() if not (p.display_name or "").strip()]
    assert len(missing) >= 15
    assert any(p.display_name != unicodedata.normalize("NFC", p.display_name)
               for p in people.values() if p.display_name)

    assert sum(len(p.notes or "") > 5000 for p in people.values()) >= 8
    tag_lists = [[t for t in (p.tags or "").split(",") if t.strip()] for p in people.values()]
    assert sum(len(tags) > 20 for tags in tag_lists) >= 8
    assert sum(any(len(t.strip()) > 50 for t in tags) for tags in tag_lists) >= 5

    email_ok = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
    emails = [p.email.strip() for p in people.values() if p.email]
    assert sum(not email_ok.match(e) for e in emails) >= 10
    assert all(e.lower().rsplit("@", 1)[-1].endswith(("example.com", "example.org",
                                                       "example.net"))
               for e in emails if email_ok.match(e))
    assert sum(p.country is None for p in people.values()) >= 50


def test_people_in_several_groups_and_in_none(messy: dict[str, Any]) -> None:
    per_person = Counter(m.person_id for m in messy["memberships"])
    assert sum(n > 1 for n in per_person.values()) >= 100
    assert len(messy["people"]) - len(per_person) >= 150
    internal = [m for m in messy["memberships"]
                if messy["groups"][m.group_id] == "internal-staff"]
    assert len(internal) >= 3
