"""A harness that runs the real sync (Dagster assets, sandbox over HTTP, a real CRM database).

The CRM here has its own small schema, described by SQL files written for the test, exactly as a
user points the package at their CRM: no code knows this schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from erzy_pipelines import cli
from erzy_pipelines.sandbox import DEMO_API_KEY
from erzy_pipelines.state import StateStore
from erzy_pipelines.sync.accounts import bound_store

CONTACTS_SQL = """
SELECT id AS crm_id, full_name AS title, phone, email, notes, tags, country, updated_at,
       company AS custom_company
FROM people
"""
MEMBERSHIPS_SQL = (
    "SELECT person_id AS crm_id, group_key, erzy_group AS erzycall_group_id FROM people_groups"
)

metadata = sa.MetaData()
people = sa.Table(
    "people",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("full_name", sa.String(300)),
    sa.Column("phone", sa.String(64)),
    sa.Column("email", sa.String(300)),
    sa.Column("notes", sa.Text),
    sa.Column("tags", sa.String(2000)),
    sa.Column("country", sa.String(2)),
    sa.Column("company", sa.String(200)),
    sa.Column("updated_at", sa.DateTime),
)
people_groups = sa.Table(
    "people_groups",
    metadata,
    sa.Column("person_id", sa.Integer),
    sa.Column("group_key", sa.String(200)),
    sa.Column("erzy_group", sa.String(100)),
)
GROUP_IDS = {"vip": "grp_vip", "newsletter": "grp_newsletter", "trial": "grp_trial"}
WRITE_METHODS = {"POST", "PATCH", "DELETE"}


def person(i: int, **overrides: Any) -> dict[str, Any]:
    """A valid CRM person with a unique, valid US number."""
    row = {
        "id": i,
        "full_name": f"Person {i}",
        "phone": f"(415) 555-{1000 + i:04d}",
        "email": f"person{i}@example.com",
        "notes": None,
        "tags": "customer",
        "country": None,
        "company": "Acme",
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None) + timedelta(minutes=i),
    }
    row.update(overrides)
    return row


def run_totals(instance: dg.DagsterInstance, run_id: str) -> dict[str, Any]:
    found = [
        record.dagster_event.asset_observation_data.asset_observation
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION)
    ]
    totals = [o for o in found if o.asset_key.path == ["erzycall_contacts"] and o.partition is None]
    assert len(totals) == 1, f"expected one run observation, found {len(totals)}"
    return {k: v.value for k, v in totals[0].metadata.items()}


class SyncHarness:
    """A CRM database, the sandbox, a state database and a Dagster instance, wired by env vars."""

    def __init__(self, crm_url: str, sandbox: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.crm_url, self.sandbox, self.tmp_path = crm_url, sandbox, tmp_path
        self.engine = sa.create_engine(crm_url)
        metadata.create_all(self.engine)
        contacts_sql, memberships_sql = tmp_path / "contacts.sql", tmp_path / "memberships.sql"
        contacts_sql.write_text(CONTACTS_SQL)
        memberships_sql.write_text(MEMBERSHIPS_SQL)
        self.state_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
        for name, value in {
            "ERZYCALL_API_KEY": DEMO_API_KEY,
            "ERZYCALL_BASE_URL": sandbox.base_url,
            "ERZYCALL_RATE_LIMITS": "10000/60,100000/3600",
            "CRM_DATABASE_URL": crm_url,
            "CRM_CONTACTS_SQL": str(contacts_sql),
            "CRM_MEMBERSHIPS_SQL": str(memberships_sql),
            "ERZY_STATE_DATABASE_URL": self.state_url,
            "ERZY_DATA_DIR": str(tmp_path / "data"),
            "ERZY_MAX_REQUESTS_PER_RUN": "0",
        }.items():
            monkeypatch.setenv(name, value)
        self.instance = dg.DagsterInstance.ephemeral()
        self._mark = 0

    # --- the CRM -------------------------------------------------------------------------------
    def add_people(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(people.insert(), list(rows))

    def update_person(self, person_id: int, **fields: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(people.update().where(people.c.id == person_id).values(**fields))

    def add_memberships(self, pairs: Iterable[tuple[int, str]]) -> None:
        rows = [{"person_id": p, "group_key": g, "erzy_group": GROUP_IDS.get(g)} for p, g in pairs]
        with self.engine.begin() as conn:
            conn.execute(people_groups.insert(), rows)

    def remove_membership(self, person_id: int, group_key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                people_groups.delete().where(
                    (people_groups.c.person_id == person_id)
                    & (people_groups.c.group_key == group_key)
                )
            )

    # --- running and observing ------------------------------------------------------------------
    def sync(self, groups: Sequence[str] | None = None, **kwargs: Any) -> tuple[int, list[dict]]:
        self._mark = len(self.sandbox.request_log)
        return cli.run_sync(groups, instance=self.instance, **kwargs)

    def requests_since_sync(self) -> list[Any]:
        return list(self.sandbox.request_log)[self._mark :]

    def writes_since_sync(self) -> list[Any]:
        return [r for r in self.requests_since_sync() if r.method in WRITE_METHODS]

    def remote_by_phone(self) -> dict[str, dict[str, Any]]:
        contacts = self.sandbox.contacts()
        phones = [c["phone"] for c in contacts]
        assert len(phones) == len(set(phones)), "two ErzyCall contacts share a phone"
        return {c["phone"]: c for c in contacts}

    def last_run_id(self) -> str:
        return self.instance.get_runs(limit=1)[0].run_id

    def run_totals(self, run_id: str | None = None) -> dict[str, Any]:
        """The run's own figures: its one observation of erzycall_contacts without a partition
        (the latest run's by default)."""
        return run_totals(self.instance, run_id or self.last_run_id())

    def state(self) -> StateStore:
        """The state database, bound to the sandbox's account (as the sync recognized it)."""
        return bound_store(
            self.state_url, os.environ["ERZYCALL_BASE_URL"], os.environ["ERZYCALL_API_KEY"]
        )

    def close(self) -> None:
        self.engine.dispose()
        self.instance.dispose()


@pytest.fixture
def harness_factory(sandbox, tmp_path, monkeypatch):
    made: list[SyncHarness] = []

    def make(crm_url: str) -> SyncHarness:
        h = SyncHarness(crm_url, sandbox, tmp_path, monkeypatch)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def harness(harness_factory, sqlite_url) -> SyncHarness:
    """The harness on a SQLite CRM (the cross-database tests use ``any_db_url``)."""
    return harness_factory(sqlite_url)
