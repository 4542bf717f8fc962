"""A world for running the real CLI the way users do: one working folder, one DAGSTER_HOME and
one state database kept across runs, real sandboxes over HTTP, real processes to kill."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from erzy_pipelines.cli import INSTANCE_TEMPLATE
from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxConfig, SandboxServer
from erzy_pipelines.state import StateStore
from erzy_pipelines.sync.accounts import bound_store
from erzy_pipelines_tests.orchestration.conftest import (
    CONTACTS_SQL,
    GROUP_IDS,
    MEMBERSHIPS_SQL,
    metadata,
    people,
    people_groups,
    person,
)

WRITES = {"POST", "PATCH", "DELETE"}


@dataclass
class Sync:
    """One sync's world: its CRM, ErzyCall sandbox, state database and Dagster instance."""

    name: str
    root: Path
    workdir: Path
    sandbox: SandboxServer
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.crm_url = f"sqlite:///{self.root / 'crm.sqlite'}"
        self.state_url = f"sqlite:///{self.root / 'state.sqlite'}"
        self.home = self.root / "dagster_home"
        self.engine = sa.create_engine(self.crm_url)
        metadata.create_all(self.engine)
        (self.root / "contacts.sql").write_text(CONTACTS_SQL)
        (self.root / "memberships.sql").write_text(MEMBERSHIPS_SQL)
        # The DAGSTER_HOME a user has had for a while: its storage exists before the first sync
        # (so this test can watch the runs while a sync starts without racing its creation).
        self.home.mkdir()
        shutil.copy(INSTANCE_TEMPLATE, self.home / "dagster.yaml")
        with self.instance():
            pass

    # -- the CRM ---------------------------------------------------------------------------
    def add_people(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(people.insert(), list(rows))

    def add_memberships(self, pairs: Iterable[tuple[int, str]]) -> None:
        rows = [{"person_id": p, "group_key": g, "erzy_group": GROUP_IDS.get(g)} for p, g in pairs]
        with self.engine.begin() as conn:
            conn.execute(people_groups.insert(), rows)

    def update_person(self, person_id: int, **fields: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(people.update().where(people.c.id == person_id).values(**fields))

    # -- running the CLI -------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ERZY", "CRM_", "DAGSTER_HOME"))
        }
        env.update(
            ERZYCALL_API_KEY=DEMO_API_KEY,
            ERZYCALL_BASE_URL=self.sandbox.base_url,
            ERZYCALL_RATE_LIMITS="10000/60,100000/3600",
            CRM_DATABASE_URL=self.crm_url,
            CRM_CONTACTS_SQL=str(self.root / "contacts.sql"),
            CRM_MEMBERSHIPS_SQL=str(self.root / "memberships.sql"),
            ERZY_STATE_DATABASE_URL=self.state_url,
            DAGSTER_HOME=str(self.home),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def spawn(self, *args: str, log: str = "sync") -> tuple[subprocess.Popen[bytes], Path]:
        """``erzy-pipelines <args>`` in the shared working folder; output to a file."""
        out = self.root / f"{log}-{time.monotonic_ns()}.log"
        with out.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "erzy_pipelines.cli", *args],
                cwd=self.workdir,
                env=self.env(),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        return proc, out

    def run(self, *args: str, timeout: float = 180) -> tuple[int, str]:
        proc, out = self.spawn(*args)
        code = proc.wait(timeout)
        return code, out.read_text()

    # -- observing -------------------------------------------------------------------------
    def writes(self, since: int = 0) -> list[Any]:
        return [r for r in list(self.sandbox.request_log)[since:] if r.method in WRITES]

    def requests(self, since: int = 0) -> list[Any]:
        return list(self.sandbox.request_log)[since:]

    def remote_phones(self) -> list[str]:
        return sorted(c["phone"] for c in self.sandbox.contacts())

    def state(self) -> StateStore:
        """The state database, bound to the sandbox's account (as the sync recognized it)."""
        return bound_store(self.state_url, self.sandbox.base_url, DEMO_API_KEY)

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def close(self) -> None:
        self.engine.dispose()


def e164(i: int) -> str:
    """The phone of ``person(i)``."""
    return f"+1415555{1000 + i:04d}"


def summary_row(output: str) -> dict[str, str]:
    """The summary table the CLI prints: header and its last row, as a dict."""
    lines = [line.split() for line in output.splitlines() if line.strip()]
    header = next(i for i, words in enumerate(lines) if words[:2] == ["scope", "status"])
    return dict(zip(lines[header], lines[header + 1], strict=True))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The one folder every sync of a test is started from, as a user would."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def make_sync(tmp_path: Path, workdir: Path) -> Iterator[Any]:
    made: list[tuple[Sync, SandboxServer]] = []

    def make(name: str = "a", *, limits: tuple = ((10_000, 60.0), (100_000, 3600.0))) -> Sync:
        sandbox = SandboxServer(SandboxConfig(limits=limits)).start()
        world = Sync(name, tmp_path / name, workdir, sandbox)
        made.append((world, sandbox))
        return world

    yield make
    for world, sandbox in made:
        world.close()
        sandbox.stop()


__all__ = ["Sync", "e164", "person", "summary_row"]
