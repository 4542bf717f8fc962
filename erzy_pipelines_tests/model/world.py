"""The world the stateful model drives: a CRM, the sandbox API over HTTP, state databases and a
Dagster instance, kept for the whole life of one deployment, as a user keeps them.

The model of the CRM is written here from the README's rules, not with the package's code: phones
come from a small pool whose E.164 form is known by construction, every edit gets a later
``updated_at`` (so the dedupe survivor is never a tie), and a title carries the edit's version.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa

from erzy_pipelines import cli
from erzy_pipelines.erzycall.client import ErzyCallClient
from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxConfig, SandboxServer

CONTACTS_SQL = "SELECT id AS crm_id, title, phone, tags, updated_at FROM people"
NOTHING_SQL = CONTACTS_SQL + " WHERE 1 = 0"
MEMBERSHIPS_SQL = (
    "SELECT person_id AS crm_id, group_key, erzy_group AS erzycall_group_id FROM people_groups"
)
GROUP_IDS = {"vip": "grp_vip", "newsletter": "grp_newsletter", "trial": "grp_trial"}
MANAGED_GROUPS = frozenset(GROUP_IDS.values())
PHONES = 10  # the pool: few enough that records share phones and merge
INVALID_PHONE = "555"  # too short anywhere: rejected (invalid or unparseable), never sent
WRITES = {"POST", "PATCH", "DELETE"}
MAX_DELETION_SHARE = 0.5  # a small CRM: 5% would refuse every deletion and hide the removal

_metadata = sa.MetaData()
people = sa.Table(
    "people",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("title", sa.String(300)),
    sa.Column("phone", sa.String(64)),
    sa.Column("tags", sa.String(2000)),
    sa.Column("updated_at", sa.DateTime),
)
people_groups = sa.Table(
    "people_groups",
    _metadata,
    sa.Column("person_id", sa.Integer),
    sa.Column("group_key", sa.String(200)),
    sa.Column("erzy_group", sa.String(100)),
)


def e164(slot: int) -> str:
    return f"+1415555{1000 + slot:04d}"


def raw_phone(slot: int, style: int) -> str:
    """The same number as users type it, in one of three spellings."""
    n = 1000 + slot
    return (f"(415) 555-{n:04d}", f"+1 415-555-{n:04d}", f"415.555.{n:04d}")[style % 3]


@dataclass
class Record:
    """One CRM person as the model knows it."""

    id: int
    slot: int | None  # index into the phone pool; None = an invalid phone
    style: int
    title: str
    version: int
    tags: tuple[str, ...]
    updated_at: datetime
    groups: set[str] = field(default_factory=set)

    @property
    def phone(self) -> str | None:
        return None if self.slot is None else e164(self.slot)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "phone": INVALID_PHONE if self.slot is None else raw_phone(self.slot, self.style),
            "tags": ",".join(self.tags),
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Expected:
    """What ErzyCall must hold for one phone, in the fields the sync owns."""

    title: str
    version: int
    tags: frozenset[str]
    groups: frozenset[str]


def expected_contacts(records: dict[int, Record]) -> dict[str, Expected]:
    """The README's dedupe, from scratch: one contact per phone; the most recently updated
    record's title; tags and groups unioned."""
    by_phone: dict[str, list[Record]] = {}
    for record in records.values():
        if record.phone is not None:
            by_phone.setdefault(record.phone, []).append(record)
    out = {}
    for phone, group in by_phone.items():
        survivor = max(group, key=lambda r: r.updated_at)
        out[phone] = Expected(
            title=survivor.title,
            version=survivor.version,
            tags=frozenset(t for r in group for t in r.tags),
            groups=frozenset(GROUP_IDS[g] for r in group for g in r.groups),
        )
    return out


@dataclass
class RunResult:
    """One sync run as the model saw it: the CLI's summary and the requests it made."""

    kind: str
    code: int
    summary: dict[str, Any]
    requests: list[Any]
    state: str
    crm_records: int  # CRM rows the run's query returned
    crm_phones: frozenset[str]
    created_ids: set[str]

    @property
    def writes(self) -> list[Any]:
        return [r for r in self.requests if r.method in WRITES]


class World:
    """The parts of one deployment. ``state`` names the state database in use: a second one is
    another deployment on the same key (or this one after its state was lost)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.sandbox = SandboxServer(
            SandboxConfig(limits=((100_000, 60.0), (1_000_000, 3600.0)))
        ).start()
        self.crm = sa.create_engine(f"sqlite:///{root / 'crm.sqlite'}")
        _metadata.create_all(self.crm)
        self.contacts_sql = root / "contacts.sql"
        self.contacts_sql.write_text(CONTACTS_SQL)
        (root / "memberships.sql").write_text(MEMBERSHIPS_SQL)
        self.api_key = DEMO_API_KEY
        self.keys = 1
        self.deployment = self.state = "a"  # the deployment, and its state database's name
        self.databases = {"a": "a"}
        self.lost = 0
        self.phones_by_id: dict[str, str] = {}  # every contact id seen, with its phone
        self._saved_env = dict(os.environ)
        os.environ.update(
            {
                "ERZYCALL_API_KEY": self.api_key,
                "ERZYCALL_BASE_URL": self.sandbox.base_url,
                "ERZYCALL_RATE_LIMITS": "100000/60,1000000/3600",
                "CRM_DATABASE_URL": f"sqlite:///{root / 'crm.sqlite'}",
                "CRM_CONTACTS_SQL": str(self.contacts_sql),
                "CRM_MEMBERSHIPS_SQL": str(root / "memberships.sql"),
                "ERZY_STATE_DATABASE_URL": self.state_url(self.state),
                "ERZY_DATA_DIR": str(root / "data"),
                "ERZY_MAX_REQUESTS_PER_RUN": "0",
                "ERZY_OWNERSHIP": "merge",
                "ERZY_DELETE_REMOVED": "false",
                "ERZY_MAX_DELETION_SHARE": str(MAX_DELETION_SHARE),
                "DAGSTER_HOME": str(root / "dagster_home"),
            }
        )
        # One DAGSTER_HOME for the deployment's whole life, shared with the CLI processes the
        # model starts (and kills), as a user's is.
        cli.ensure_dagster_home()
        self.instance = dg.DagsterInstance.get()

    def close(self) -> None:
        os.environ.clear()
        os.environ.update(self._saved_env)
        self.sandbox.stop()
        self.crm.dispose()
        self.instance.dispose()

    def state_url(self, name: str) -> str:
        return f"sqlite:///{self.root / f'state-{name}.sqlite'}"

    # --- the CRM -------------------------------------------------------------------------
    def write_crm(self, records: dict[int, Record]) -> None:
        """The CRM tables hold exactly ``records`` (memberships rows in a shuffled order)."""
        with self.crm.begin() as conn:
            conn.execute(people_groups.delete())
            conn.execute(people.delete())
            if records:
                conn.execute(people.insert(), [r.row() for r in records.values()])
            pairs = [
                {"person_id": r.id, "group_key": g, "erzy_group": GROUP_IDS[g]}
                for r in sorted(records.values(), key=lambda r: -r.id)
                for g in sorted(r.groups)
            ]
            if pairs:
                conn.execute(people_groups.insert(), pairs)

    def set_query_returns_nothing(self, nothing: bool) -> None:
        self.contacts_sql.write_text(NOTHING_SQL if nothing else CONTACTS_SQL)

    # --- settings a user changes -------------------------------------------------------------
    def set_removal(self, on: bool) -> None:
        os.environ["ERZY_DELETE_REMOVED"] = "true" if on else "false"

    def rotate_key(self) -> None:
        """A new key for the same organization; the old one keeps working for a while."""
        self.keys += 1
        self.api_key = f"ek_test_model_rotated_key_{self.keys:04d}"
        self.sandbox.add_key(self.api_key)
        os.environ["ERZYCALL_API_KEY"] = self.api_key

    def use_state(self, deployment: str) -> None:
        """Run as ``deployment`` (its own state database) from now on."""
        self.deployment = deployment
        self.state = self.databases.setdefault(deployment, deployment)
        os.environ["ERZY_STATE_DATABASE_URL"] = self.state_url(self.state)

    def lose_state(self) -> None:
        """This deployment's state database is gone (a new volume, a dropped database): it
        starts again from an empty one. (A new file: the old one may still be open in this
        process, as a server's connection pool would keep a dropped database's sessions.)"""
        self.lost += 1
        self.databases[self.deployment] = f"{self.deployment}{self.lost}"
        self.use_state(self.deployment)

    # --- ErzyCall's users ------------------------------------------------------------------
    def live(self) -> list[dict[str, Any]]:
        return self.sandbox.contacts()

    def agent_update(self, contact_id: str, changes: dict[str, Any]) -> None:
        assert self.sandbox.app.store.update(contact_id, changes) is not None

    def agent_create(self, contact: dict[str, Any]) -> dict[str, Any]:
        return self.sandbox.add_contact_direct({"tags": ["legacy"], **contact})

    @contextmanager
    def agent_tags_after_listing(
        self, phone: str, tag: str, on_tag: Callable[[str], None]
    ) -> Iterator[list[str]]:
        """While inside, the first full listing of ErzyCall a run makes is followed, before the
        run sends anything, by an agent adding ``tag`` to the contact of ``phone`` (``on_tag``
        is told its id at once). Yields the ids it tagged."""
        tagged: list[str] = []
        original = ErzyCallClient.list_contacts

        def listing_then_agent(client: ErzyCallClient, *args: Any, **kwargs: Any) -> Any:
            listed = list(original(client, *args, **kwargs))
            contact = next((c for c in self.live() if c["phone"] == phone), None)
            if contact is not None and not tagged:
                self.agent_update(contact["id"], {"tags": [*contact["tags"], tag]})
                tagged.append(contact["id"])
                on_tag(contact["id"])
            return iter(listed)

        ErzyCallClient.list_contacts = listing_then_agent  # type: ignore[method-assign]
        try:
            yield tagged
        finally:
            ErzyCallClient.list_contacts = original  # type: ignore[method-assign]

    def agent_delete(self, contact_id: str) -> None:
        assert self.sandbox.app.store.delete(contact_id)

    # --- runs ------------------------------------------------------------------------------
    @contextmanager
    def observing(self, kind: str, records: dict[int, Record]) -> Iterator[dict[str, Any]]:
        """Bookkeeping around one run: the requests it made and the contacts that appeared."""
        mark = len(self.sandbox.request_log)
        live = self.live()
        self.phones_by_id.update({c["id"]: c["phone"] for c in live})
        before = {c["id"] for c in live}
        seen: dict[str, Any] = {"kind": kind}
        yield seen
        requests = list(self.sandbox.request_log)[mark:]
        seen["result"] = RunResult(
            kind=kind,
            code=seen.get("code", -1),
            summary=seen.get("summary", {}),
            requests=requests,
            state=self.state,
            crm_records=seen.get("crm_records", len(records)),
            crm_phones=frozenset(r.phone for r in records.values() if r.phone),
            created_ids={c["id"] for c in self.live()} - before,
        )
        self.phones_by_id.update({c["id"]: c["phone"] for c in self.live()})

    def run(self, kind: str, records: dict[int, Record], **kwargs: Any) -> RunResult:
        """One ``erzy-pipelines sync`` (as the CLI runs it: one job run, this instance)."""
        with self.observing(kind, records) as seen:
            code, summaries = self.cli_run(**kwargs)
            seen["code"] = code
            seen["summary"] = summaries[0] if summaries else {}
        return seen["result"]

    def last_run_totals(self) -> dict[str, Any]:
        """The latest run's own figures: its observation of erzycall_contacts without a
        partition."""
        run_id = self.instance.get_runs(limit=1)[0].run_id
        found = [
            record.dagster_event.asset_observation_data.asset_observation
            for record in self.instance.all_logs(
                run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION
            )
        ]
        totals = [
            o for o in found if o.asset_key.path[-1] == "erzycall_contacts" and not o.partition
        ]
        assert len(totals) == 1, f"expected one run observation, found {len(totals)}"
        return {k: v.value for k, v in totals[0].metadata.items()}

    def cli_run(self, **kwargs: Any) -> tuple[int, list[dict]]:
        return cli.run_sync(instance=self.instance, **kwargs)

    def deleted_phone(self, contact_id: str) -> str | None:
        return self.phones_by_id.get(contact_id)

    def run_killed(self, records: dict[int, Record]) -> RunResult:
        """``erzy-pipelines sync`` in its own process, SIGKILLed once it has sent a write (or
        after a few seconds): the next run must finish its work and never block on it."""
        executable = Path(sys.executable).with_name("erzy-pipelines")
        with self.observing("killed", records) as seen:
            mark = len(self.sandbox.request_log)
            process = subprocess.Popen(
                [str(executable), "sync"],
                env=dict(os.environ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and process.poll() is None:
                if any(r.method in WRITES for r in list(self.sandbox.request_log)[mark:]):
                    break
                time.sleep(0.02)
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            seen["code"] = process.wait(30)
            self.sandbox.wait_idle(10)  # what the killed process sent before it died lands
        return seen["result"]

    def run_in_thread(self, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["out"] = cli.run_sync(instance=self.instance, **kwargs)
            except BaseException as exc:  # reported by the caller
                box["error"] = exc

        thread = threading.Thread(target=target, name="model-run-a", daemon=True)
        thread.start()
        return thread, box


def canonical(body: str) -> str:
    try:
        return json.dumps(json.loads(body), sort_keys=True)
    except ValueError:
        return body


def base_time() -> datetime:
    return datetime(2026, 1, 1)


def later(clock: int) -> datetime:
    return base_time() + timedelta(minutes=clock)
