"""The fault lab: a CRM, a sandbox that can be broken, stopped and restarted, a state database,
and the checker that compares what ErzyCall holds with what the CRM says it should hold.

The checker is deliberately independent of the code under test: the expected contacts come from
the CRM tables through a few plain rules that hold for the lab's data (see
:func:`expected_contacts`), not from ``core.normalize``/``core.dedupe``.

**Strict sandbox.** The real API (and the sandbox by default) refuses a second contact with the
same phone (409), and the sync resolves that 409 by adopting the existing contact. Here the lab
switches that refusal off (:func:`allow_duplicate_phones`), so a duplicate can only be prevented
by the sync itself — idempotency keys, intents committed before sending, leases — and any slip
shows up as a duplicate instead of being silently absorbed by a 409.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from erzy_pipelines.core.key_id import key_id
from erzy_pipelines.core.payload import payload_hash
from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxConfig, SandboxServer
from erzy_pipelines.state import StateStore
from erzy_pipelines.state.credentials import known_account
from erzy_pipelines_tests.faults import report
from erzy_pipelines_tests.orchestration.conftest import (
    GROUP_IDS,
    SyncHarness,
    people,
    people_groups,
    person,
)

REPO = Path(__file__).resolve().parents[2]
N = 24
FIELDS = ("title", "phone", "email", "notes", "tags", "groupIds", "customFields")
WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE"})
GENEROUS_LIMITS = ((10_000, 60.0), (100_000, 3600.0))


def memberships_for(i: int) -> list[str]:
    """The lab's groups: overlapping vip/newsletter/trial, and a CRM-only group (no ErzyCall id)."""
    keys = []
    if i % 3 == 0:
        keys.append("vip")
    if i % 2 == 0:
        keys.append("newsletter")
    if i % 5 == 0:
        keys.append("trial")
    if i % 7 == 0:
        keys.append("local")  # not mapped to ErzyCall: must never appear in groupIds
    return keys


def allow_duplicate_phones(srv: SandboxServer) -> None:
    """Make the sandbox accept a second contact with a phone already taken (see module doc)."""
    store = srv.app.store
    with store.lock:
        store._db.execute("DROP INDEX IF EXISTS contacts_live_phone")
    store._phone_owner = lambda phone: None  # type: ignore[method-assign]


# --------------------------------------------------------------------------- expectation


def e164(raw: str) -> str:
    """The lab's phones are US numbers written ``(415) 555-1234``."""
    return "+1" + re.sub(r"\D", "", raw)[-10:]


def crm_rows(engine: sa.Engine) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(people)).mappings()]
        links = list(conn.execute(sa.select(people_groups)).mappings())
    groups: dict[str, list[str]] = {}
    for link in links:
        groups.setdefault(str(link["person_id"]), []).append(link["group_key"])
    return rows, groups


def scope_ids(engine: sa.Engine, label: str) -> set[str]:
    """CRM ids a run over partition scope ``label`` ("all" or "vip,newsletter,...") covers."""
    rows, groups = crm_rows(engine)
    ids = {str(r["id"]) for r in rows}
    if label == "all":
        return ids
    wanted = set(label.split(","))
    return {
        i
        for i in ids
        if wanted & set(groups.get(i, ())) or ("_ungrouped" in wanted and not groups.get(i))
    }


def expected_contacts(engine: sa.Engine, label: str = "all") -> dict[str, dict[str, Any]]:
    """What ErzyCall should hold for the CRM ids in scope, by phone, in the API's shape."""
    rows, groups = crm_rows(engine)
    wanted = scope_ids(engine, label)
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        cid = str(r["id"])
        if cid not in wanted:
            continue
        phone = e164(r["phone"])
        out[phone] = {
            "title": r["full_name"],
            "phone": phone,
            "email": r["email"],
            "notes": r["notes"],
            "tags": [t.strip() for t in (r["tags"] or "").split(",") if t.strip()],
            "groupIds": sorted({GROUP_IDS[g] for g in groups.get(cid, ()) if g in GROUP_IDS}),
            "customFields": {"company": r["company"]} if r["company"] else {},
        }
    return out


# --------------------------------------------------------------------------- the verdict


@dataclass
class Verdict:
    expected: int = 0
    present: int = 0
    duplicated: int = 0
    missing: int = 0
    wrong: int = 0
    audit: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicated or self.missing or self.wrong or self.audit or self.problems)

    def explain(self) -> str:
        return "\n".join([*self.problems, *self.audit]) or "ok"


def _same(field_name: str, want: Any, got: Any) -> bool:
    if field_name == "groupIds":
        return sorted(want or []) == sorted(got or [])
    if field_name in ("tags",):
        return list(want or []) == list(got or [])
    if field_name == "customFields":
        return dict(want or {}) == dict(got or {})
    return want == got


#: Outcomes a later attempt of the same run (a retried Dagster step) may supersede.
SUPERSEDABLE = frozenset({"failed", "deferred"})
RUN_COUNTERS = ("created", "updated", "unchanged", "merged", "rejected", "failed", "deferred")


def audit_problems(store: StateStore, engine: sa.Engine) -> list[str]:
    """Every run in the state database must account for every CRM contact in its scope exactly
    once: listed in its audit rows (created, updated, failed, deferred, rejected, merged, ...)
    or counted as unchanged in its runs row; never twice, never outside the scope; and the
    runs row's counters must add up to the scope.

    An operation row is about its surviving CRM record (the first of its ``crm_ids``); a merge
    or reject row about its own. A contact may have a second row in one run only when a retried
    step superseded a ``failed``/``deferred`` outcome of an earlier attempt. A run that never
    finished (killed, or its state database gone) may account for fewer, never for one twice.
    """
    problems = []
    for run in store.runs(limit=500):
        if run["dry_run"]:
            continue
        rid = run["run_id"][:8]
        scope = scope_ids(engine, run["partition_key"] or "all")
        outcomes: dict[str, list[str]] = {}
        for r in reversed(store.audit_rows(run_id=run["run_id"])):  # oldest first
            ids = [c for c in (r["crm_ids"] or "").split(",") if c]
            for cid in ids if r["action"] in ("merge", "reject") else ids[:1]:
                outcomes.setdefault(cid, []).append(r["outcome"])
        twice = sorted(c for c, seen in outcomes.items() if set(seen[:-1]) - SUPERSEDABLE)
        if twice:
            problems.append(f"run {rid}: CRM ids audited twice: {twice}")
        outside = sorted(set(outcomes) - scope)
        if outside:
            problems.append(f"run {rid}: audited CRM ids outside its scope: {outside}")
        audited_unchanged = sum(seen[-1] == "unchanged" for seen in outcomes.values())
        accounted = len(outcomes) + (run["unchanged"] or 0) - audited_unchanged
        counters = sum(run[k] or 0 for k in RUN_COUNTERS)
        finished = run["status"] != "running"
        if finished and (accounted != len(scope) or counters != len(scope)):
            problems.append(
                f"run {rid} ({run['status']}): accounts for {accounted} contacts "
                f"(counters {counters}), scope has {len(scope)}"
            )
        if not finished and accounted > len(scope):
            problems.append(f"run {rid} (unfinished): accounts for {accounted} > {len(scope)}")
    return problems


def state_problems(
    store: StateStore,
    remote: list[dict[str, Any]],
    expected: Mapping[str, dict[str, Any]],
    *,
    final: bool,
) -> list[str]:
    """Nothing in ErzyCall that the state cannot account for; at the end, state == ErzyCall."""
    problems = []
    states = {p: store.state_row(p) for p in {c["phone"] for c in remote} | set(expected)}
    for contact in remote:
        row = states.get(contact["phone"])
        if row is None or (row["remote_id"] != contact["id"] and not row["pending_key"]):
            problems.append(
                f"{contact['phone']}: in ErzyCall ({contact['id']}) but unknown to the state "
                "(no matching remote id, no pending intent) — sent without being recorded"
            )
    if final:
        for phone, want in expected.items():
            row = states.get(phone)
            if row is None or row["last_hash"] != payload_hash(want):
                problems.append(f"{phone}: state's last confirmed payload is not the CRM's")
            elif row["pending_hash"] or row["lease_run_id"]:
                problems.append(f"{phone}: pending intent or lease left after the final run")
    return problems


# --------------------------------------------------------------------------- the lab


class FaultLab:
    """One scenario's world. ``lab.h`` is the sync harness (``lab.h.sync()`` runs the CLI)."""

    def __init__(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, strict: bool = True, seed: int = 7
    ) -> None:
        self.tmp_path, self.mp, self.strict, self.seed = tmp_path, monkeypatch, strict, seed
        self.db_path = tmp_path / "sandbox.sqlite"
        self.sandbox: SandboxServer | None = None
        self._past_stats: Counter[str] = Counter()
        self._past_log: list[Any] = []
        self._stop_lock = threading.Lock()
        self.slow = 0  # latency faults that struck
        self.notes: list[str] = []  # faults the sandbox cannot count (kill, outage, ...)
        self.before_request: list[Any] = []  # hook(request), called in server threads
        self.after_request: list[Any] = []  # hook(request, response), called in server threads
        self.start_sandbox()
        assert self.sandbox is not None
        self.h = SyncHarness(
            f"sqlite:///{tmp_path / 'crm.sqlite'}", self.sandbox, tmp_path, monkeypatch
        )
        self._store = StateStore(self.h.state_url)

    @property
    def store(self) -> StateStore:
        """The state database, bound to the sandbox's account once a sync has recognized it."""
        assert self.sandbox is not None
        found = known_account(self._store, self.sandbox.base_url, key_id(DEMO_API_KEY))
        return self._store.with_account(found) if found else self._store

    def use_state_database(self, url: str) -> None:
        """Keep the sync's state (and its shared rate-limit budget) in ``url`` from now on."""
        self.mp.setenv("ERZY_STATE_DATABASE_URL", url)
        self.h.state_url = url
        self._store.close()
        self._store = StateStore(url)

    def use_dagster_home(self, home: Path) -> None:
        """Run the in-process syncs on the Dagster instance in ``home`` from now on (the one
        a spawned CLI used), as a user rerunning in the same DAGSTER_HOME does."""
        import dagster as dg

        self.h.instance.dispose()
        self.h.instance = dg.DagsterInstance.from_config(str(home))

    # -- the sandbox -------------------------------------------------------------------------
    def start_sandbox(self, port: int = 0) -> SandboxServer:
        srv = SandboxServer(
            SandboxConfig(
                port=port, db_path=str(self.db_path), seed=self.seed, limits=GENEROUS_LIMITS
            )
        ).start()
        if self.strict:
            allow_duplicate_phones(srv)
        injector, real_latency = srv.app.injector, srv.app.injector.latency

        def counted_latency() -> float:
            delay = real_latency()
            if delay:
                self.slow += 1
            return delay

        injector.latency = counted_latency  # type: ignore[method-assign]
        real_handle = srv.app.handle

        def handle(req: Any) -> Any:
            # Hooks run in the server's handler threads: the way to act "after k requests".
            for before in list(self.before_request):
                before(req)
            resp = real_handle(req)
            for hook in list(self.after_request):
                hook(req, resp)
            return resp

        srv.app.handle = handle  # type: ignore[method-assign]
        self.sandbox, self.port = srv, srv.port
        if hasattr(self, "h"):
            self.h.sandbox = srv
        return srv

    def stop_sandbox(self) -> None:
        """Stop the sandbox (from any thread; idempotent), keeping its figures and log."""
        with self._stop_lock:
            srv = self.sandbox
            if srv is None or srv._closed:
                return
            srv.stop()
            stats = srv.stats()
            for k, v in stats.items():
                if isinstance(v, int):
                    self._past_stats[k] += v
            for status, n in stats["by_status"].items():
                self._past_stats[f"status_{status}"] += n
            self._past_log += srv.request_log

    def restart_sandbox(self) -> SandboxServer:
        """A new sandbox process-equivalent on the same port and database file."""
        self.stop_sandbox()
        return self.start_sandbox(self.port)

    def stats(self) -> Counter[str]:
        total = Counter(self._past_stats)
        srv = self.sandbox
        if srv is not None and not srv._closed:
            stats = srv.stats()
            for k, v in stats.items():
                if isinstance(v, int):
                    total[k] += v
            for status, n in stats["by_status"].items():
                total[f"status_{status}"] += n
        return total

    def log(self) -> list[Any]:
        srv = self.sandbox
        current = srv.request_log if srv is not None and not srv._closed else []
        return [*self._past_log, *current]

    def settle(self, seconds: float = 0.0) -> None:
        """Let handler threads still sleeping on injected latency finish their writes."""
        time.sleep(seconds)

    def sync(self, groups: list[str] | None = None, **kwargs: Any) -> tuple[int, list[dict]]:
        """One CLI sync in this process (``cli.run_sync`` on the harness's Dagster instance)."""
        return self.h.sync(groups, log_level="WARNING", **kwargs)

    def age_leases(self) -> int:
        """Expire every lease, as if the lease time (600 s) had passed since a run died."""
        from erzy_pipelines.state.schema import contact_state

        with self.store.engine.begin() as conn:
            return conn.execute(
                contact_state.update()
                .where(contact_state.c.lease_run_id.is_not(None))
                .values(lease_until=0.0)
            ).rowcount

    # -- the CRM -------------------------------------------------------------------------------
    def populate(self, n: int = N) -> None:
        self.h.add_people(person(i) for i in range(1, n + 1))
        self.h.add_memberships((i, g) for i in range(1, n + 1) for g in memberships_for(i))

    # -- running the CLI in a real process -----------------------------------------------------
    def spawn(
        self,
        *args: str,
        name: str,
        module: str = "erzy_pipelines.cli",
        env: Mapping[str, str] | None = None,
    ) -> tuple[subprocess.Popen[bytes], Path]:
        """Start ``python -m <module> <args>`` with the lab's environment and its own
        DAGSTER_HOME; output goes to a file (a full pipe would stall the child)."""
        child_env = dict(os.environ)
        child_env.update(
            DAGSTER_HOME=str(self.tmp_path / f"dagster_home_{name}"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        child_env.update(env or {})
        out = self.tmp_path / f"{name}.log"
        with out.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=REPO,
                env=child_env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        return proc, out

    # -- the checker -----------------------------------------------------------------------------
    def check(self, label: str = "all", *, final: bool = True) -> Verdict:
        assert self.sandbox is not None and not self.sandbox._closed, "check needs a live sandbox"
        expected = expected_contacts(self.h.engine, label)
        remote = self.sandbox.contacts()
        by_phone: dict[str, list[dict[str, Any]]] = {}
        for contact in remote:
            by_phone.setdefault(contact["phone"], []).append(contact)
        v = Verdict(expected=len(expected), present=len(remote))
        for phone, copies in sorted(by_phone.items()):
            if len(copies) > 1:
                v.duplicated += len(copies) - 1
                v.problems.append(f"{phone}: {len(copies)} contacts in ErzyCall")
            want = expected.get(phone)
            if want is None:
                v.wrong += 1
                v.problems.append(f"{phone}: in ErzyCall but not in the CRM's scope")
                continue
            for copy in copies:
                bad = [f for f in FIELDS if not _same(f, want[f], copy.get(f))]
                if bad:
                    v.wrong += 1
                    v.problems.append(
                        f"{phone}: wrong {', '.join(bad)}: "
                        + "; ".join(f"{f} {copy.get(f)!r} != {want[f]!r}" for f in bad)
                    )
                    break
        for phone in sorted(set(expected) - set(by_phone)):
            v.missing += 1
            v.problems.append(f"{phone}: missing from ErzyCall")
        v.problems += state_problems(self.store, remote, expected, final=final)
        v.audit = audit_problems(self.store, self.h.engine)
        return v

    def faults_text(self) -> str:
        s = self.stats()
        parts = []
        for key, label in (
            ("status_500", "500"),
            ("rate_limited", "429"),
            ("lost_responses", "lost"),
            ("status_401", "401"),
            ("status_403", "403"),
        ):
            if s[key]:
                parts.append(f"{label}×{s[key]}")
        if self.slow:
            parts.append(f"slow×{self.slow}")
        parts += self.notes
        return ", ".join(parts) or "-"

    def record(self, scenario: str, verdict: Verdict, *, result: str | None = None) -> None:
        report.record(
            report.ScenarioRow(
                scenario=scenario,
                faults=self.faults_text(),
                requests=self.stats()["requests"],
                expected=verdict.expected,
                present=verdict.present,
                duplicated=verdict.duplicated,
                missing=verdict.missing,
                wrong=verdict.wrong,
                audit="ok" if not verdict.audit else f"{len(verdict.audit)} issue(s)",
                result=result or ("ok" if verdict.ok else "FAIL"),
            )
        )

    def writes(self, since: int = 0) -> list[Any]:
        return [r for r in self.log()[since:] if r.method in WRITE_METHODS]

    def close(self) -> None:
        self.stop_sandbox()
        self._store.close()
        self.h.close()


def phones_of(records: Iterable[Any], contacts: Iterable[Mapping[str, Any]]) -> list[str]:
    """The phone each logged write addressed (POST: its body; PATCH: the contact id's phone)."""
    import json

    by_id = {c["id"]: c["phone"] for c in contacts}
    out = []
    for r in records:
        if r.method == "POST":
            out.append(json.loads(r.body)["phone"])
        else:
            out.append(by_id.get(r.path.rsplit("/", 1)[-1], "?"))
    return out
