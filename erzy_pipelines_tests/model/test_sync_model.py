"""A stateful model of the whole sync: the life of one deployment, in random order.

Hypothesis drives what happens to a deployment over months — CRM edits (fields, phones,
memberships, records added and removed, the tables emptied, a query returning nothing), agents
editing and deleting contacts in ErzyCall, full, group, dry and reconcile runs, removal switched on
and off, a second state on the same key (another deployment, or this one after its state was
lost), key rotation, the API's faults (lost responses, 5xx, 429 bursts), a run cut short by its
request cap, two runs at once — against the sandbox over HTTP, a real CRM and state database and
one Dagster instance kept for the whole example. After every step it checks the README's promises,
each stated once below as an invariant (``check_*``).

CI runs a fixed budget of examples. A long soak with a seed (see the README, "Tests"):

    ERZY_MODEL_EXAMPLES=200 ERZY_MODEL_SEED=7 make soak
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from erzy_pipelines.erzycall import client as client_module
from erzy_pipelines.erzycall.retry import RetryPolicy
from erzy_pipelines.sandbox.faults import Faults
from erzy_pipelines_tests.model.world import (
    GROUP_IDS,
    MANAGED_GROUPS,
    PHONES,
    Record,
    RunResult,
    World,
    canonical,
    e164,
    expected_contacts,
    later,
)

EXAMPLES = int(os.environ.get("ERZY_MODEL_EXAMPLES", "10"))
STEPS = int(os.environ.get("ERZY_MODEL_STEPS", "25"))
SEED = os.environ.get("ERZY_MODEL_SEED") or None
SHRINK = os.environ.get("ERZY_MODEL_SHRINK", "1") != "0"  # 0: report the first failure as found
TAGS = ("alpha", "beta", "gamma", "delta")
GROUPS = tuple(GROUP_IDS)
FAULTS = {
    "none": {},
    "lost responses": {"lose_response_rate": 0.3},
    "proxy 404": {"proxy_404": 3},
    "server errors": {"error_rate": 0.3},
    "429 burst": {"burst_429": 7},
}


class SyncModel(RuleBasedStateMachine):
    """One deployment's life. The model keeps what the CRM holds, what ErzyCall's users did, and
    what every run sent; the sandbox and the state databases are the real ones."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="erzy-model-"))
        self.world = World(self.tmp / "world")
        self.records: dict[int, Record] = {}
        self.next_id = 1
        self.clock = 0  # minutes since the model's epoch: every edit is later than the last
        self.version = 0
        self.agent_tags: dict[str, set[str]] = {}  # contact id → tags ErzyCall's users added
        # contact id → tags another state sent: to a state that did not send them they are
        # like users' tags (merge mode keeps them); a state never removes what it did not send
        self.foreign_tags: dict[str, set[str]] = {}
        self.foreign_groups: dict[str, set[str]] = {}  # the same for groups
        # phone → tags a SIGKILLed run sent: its state never learned whether they landed, so a
        # later merge cannot tell them from users' tags and keeps them (README, Known limits)
        self.in_doubt_tags: dict[str, set[str]] = {}
        self.drifted: set[str] = set()  # phones whose owned fields an agent changed or deleted
        self.created_by: dict[str, str] = {}  # contact id → the state whose run created it
        self.key_sent: dict[str, tuple[str, str]] = {}  # idempotency key → (state, body)
        self.last_read: dict[str, int] = {}  # state → CRM records its last full run read
        self.removal = False
        self.query_empty = False
        self.quiet = False  # nothing changed since the last clean full run
        self.runs: list[RunResult] = []

    def teardown(self) -> None:
        self.world.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- the CRM ---------------------------------------------------------------------------------
    def _tick(self) -> None:
        self.clock += 1
        self.version += 1
        self.quiet = False

    def _save(self) -> None:
        self.world.write_crm(self.records)

    @initialize(
        people=st.lists(
            st.tuples(
                st.integers(0, PHONES - 1),
                st.integers(0, 2),
                st.sets(st.sampled_from(TAGS), max_size=2),
                st.sets(st.sampled_from(GROUPS), max_size=2),
            ),
            min_size=2,
            max_size=8,
        )
    )
    def seed_crm(self, people: list[tuple[int, int, set[str], set[str]]]) -> None:
        for slot, style, tags, groups in people:
            self._add(slot, style, tags, groups)
        self._save()

    def _add(self, slot: int | None, style: int, tags: set[str], groups: set[str]) -> None:
        self._tick()
        rid = self.next_id
        self.next_id += 1
        self.records[rid] = Record(
            id=rid,
            slot=slot,
            style=style,
            title=f"P{rid} v{self.version}",
            version=self.version,
            tags=tuple(sorted(tags)),
            updated_at=later(self.clock),
            groups=set(groups),
        )

    def _pick(self, data: st.DataObject) -> Record:
        return self.records[data.draw(st.sampled_from(sorted(self.records)))]

    def _edited(self, record: Record) -> None:
        self._tick()
        record.version = self.version
        record.updated_at = later(self.clock)
        self._save()

    @rule(
        slot=st.one_of(st.none(), st.integers(0, PHONES - 1)),
        style=st.integers(0, 2),
        tags=st.sets(st.sampled_from(TAGS), max_size=2),
        groups=st.sets(st.sampled_from(GROUPS), max_size=2),
    )
    def crm_add_record(self, slot: int | None, style: int, tags: set[str], groups: set[str]):
        self._add(slot, style, tags, groups)
        self._save()

    @precondition(lambda self: self.records)
    @rule(data=st.data())
    def crm_edit_title(self, data: st.DataObject) -> None:
        record = self._pick(data)
        record.title = f"P{record.id} v{self.version + 1}"
        self._edited(record)

    @precondition(lambda self: self.records)
    @rule(data=st.data(), tags=st.sets(st.sampled_from(TAGS), max_size=3))
    def crm_edit_tags(self, data: st.DataObject, tags: set[str]) -> None:
        record = self._pick(data)
        record.tags = tuple(sorted(tags))
        self._edited(record)

    @precondition(lambda self: self.records)
    @rule(data=st.data(), slot=st.integers(0, PHONES - 1), style=st.integers(0, 2))
    def crm_change_phone(self, data: st.DataObject, slot: int, style: int) -> None:
        record = self._pick(data)
        record.slot, record.style = slot, style
        self._edited(record)

    @precondition(lambda self: self.records)
    @rule(data=st.data(), group=st.sampled_from(GROUPS))
    def crm_toggle_membership(self, data: st.DataObject, group: str) -> None:
        record = self._pick(data)
        record.groups ^= {group}
        self._edited(record)

    @precondition(lambda self: self.records)
    @rule(data=st.data())
    def crm_remove_record(self, data: st.DataObject) -> None:
        del self.records[self._pick(data).id]
        self._tick()
        self._save()

    @precondition(lambda self: self.records)
    @rule()
    def crm_emptied(self) -> None:
        """Someone truncated the CRM's tables (a failed migration, a wrong environment)."""
        self.records.clear()
        self._tick()
        self._save()

    @rule(nothing=st.booleans())
    def crm_query_returns_nothing(self, nothing: bool) -> None:
        """The contacts query was edited and now selects no row (or was put right again)."""
        self.query_empty = nothing
        self.world.set_query_returns_nothing(nothing)
        self.quiet = False

    # --- ErzyCall's users ------------------------------------------------------------------------
    def _live_pick(self, data: st.DataObject) -> dict[str, Any] | None:
        """A contact ErzyCall holds. The draw is an index, not a choice among the sandbox's
        contacts, so what Hypothesis draws never depends on state outside the model (a replay
        while shrinking draws the same)."""
        index = data.draw(st.integers(0, 10_000))
        live = sorted(self.world.live(), key=lambda c: c["phone"])
        return live[index % len(live)] if live else None

    @rule(data=st.data(), n=st.integers(1, 3))
    def agent_adds_tag(self, data: st.DataObject, n: int) -> None:
        contact = self._live_pick(data)
        assume(contact is not None)
        tag = f"agent-{n}"
        self.world.agent_update(contact["id"], {"tags": [*contact["tags"], tag]})
        self.agent_tags.setdefault(contact["id"], set()).add(tag)

    @rule(slot=st.integers(0, PHONES - 1))
    def another_tool_creates_contact(self, slot: int) -> None:
        """Another tool (or an agent) creates a contact with a phone the CRM may hold: the sync
        adopts it, keeping the tag it came with."""
        phone = e164(slot)
        assume(phone not in {c["phone"] for c in self.world.live()})
        made = self.world.agent_create({"title": "from another tool", "phone": phone})
        self.agent_tags[made["id"]] = {"legacy"}
        self.drifted.add(phone)
        self.quiet = False

    @rule(data=st.data())
    def agent_edits_title(self, data: st.DataObject) -> None:
        contact = self._live_pick(data)
        assume(contact is not None)
        self.world.agent_update(contact["id"], {"title": "edited by an agent"})
        self.drifted.add(contact["phone"])
        self.quiet = False

    @rule(data=st.data())
    def agent_deletes_contact(self, data: st.DataObject) -> None:
        contact = self._live_pick(data)
        assume(contact is not None)
        self.world.agent_delete(contact["id"])
        self.drifted.add(contact["phone"])
        self.quiet = False

    # --- settings and deployments ----------------------------------------------------------------
    @rule(on=st.booleans())
    def set_removal(self, on: bool) -> None:
        self.removal = on
        self.world.set_removal(on)

    @rule(proxy_404=st.booleans())
    def rotate_key(self, proxy_404: bool) -> None:
        """A new key for the same organization. A key rotation is not a change: the next run
        finds the same account and sends nothing new. With ``proxy_404``, a proxy answers the
        account probe with its own 404 page: the run must fail, never start a new account."""
        self.world.rotate_key()
        if proxy_404:
            self._run("probe through a proxy's 404", "proxy 404")

    @rule(name=st.sampled_from(["a", "b"]))
    def use_state(self, name: str) -> None:
        """Another deployment (its own state database) on the same key and organization."""
        if name != self.world.deployment:
            self._tags_become_foreign()
            self.world.use_state(name)
            self.quiet = False

    @rule()
    def state_lost(self) -> None:
        """This deployment's state database is gone; it starts again from nothing."""
        self._tags_become_foreign()
        self.world.lose_state()
        self.quiet = False

    def _tags_become_foreign(self) -> None:
        for contact in self.world.live():
            self.foreign_tags.setdefault(contact["id"], set()).update(contact["tags"])
            self.foreign_groups.setdefault(contact["id"], set()).update(contact["groupIds"])

    # --- runs ------------------------------------------------------------------------------------
    def _run(self, kind: str, fault: str = "none", **kwargs: Any) -> RunResult:
        faults = FAULTS[fault]
        self.world.sandbox.faults = Faults(**faults)
        try:
            result = self.world.run(kind, self.records, **kwargs)
        finally:
            self.world.sandbox.faults = Faults()
        self._after_run(result, clean=not faults and not kwargs.get("max_requests"))
        return result

    @rule(fault=st.sampled_from(sorted(FAULTS)))
    def run_full(self, fault: str) -> None:
        was_quiet = self.quiet
        result = self._run("full", fault)
        if was_quiet and fault == "none":
            self.check_a_quiet_rerun_sends_nothing(result)
        if fault == "429 burst":
            self.check_429s_within_the_wait_budget_are_waited_out(result)

    @rule(group=st.sampled_from(GROUPS))
    def run_group(self, group: str) -> None:
        known = {g for r in self.records.values() for g in r.groups}
        assume(group in known and not self.query_empty)
        self._run("group", groups=[group])

    @rule()
    def run_dry(self) -> None:
        result = self._run("dry", dry_run=True)
        assert not result.writes, f"a dry run sent {len(result.writes)} write(s)"

    @rule(fault=st.sampled_from(["none", "lost responses"]))
    def run_reconcile(self, fault: str) -> None:
        self._run("reconcile", fault, full_resync=True)

    @precondition(lambda self: any(r.phone for r in self.records.values()))
    @rule(data=st.data())
    def reconcile_while_an_agent_edits(self, data: st.DataObject) -> None:
        """A reconcile lists ErzyCall; an agent tags a contact after the listing, before the
        reconcile PATCHes that contact's tags (its CRM tags changed): the tag must survive."""
        record = data.draw(st.sampled_from([r for r in self.records.values() if r.phone]))
        union = {t for r in self.records.values() if r.phone == record.phone for t in r.tags}
        missing = [t for t in TAGS if t not in union]
        record.tags = (*record.tags, missing[0]) if missing else ()
        self._edited(record)
        def tagged(contact_id: str) -> None:
            self.agent_tags.setdefault(contact_id, set()).add("agent-late")

        with self.world.agent_tags_after_listing(record.phone, "agent-late", tagged):
            self._run("reconcile", full_resync=True)

    @rule(cap=st.integers(1, 3))
    def run_capped(self, cap: int) -> None:
        self._run("capped", max_requests=cap)

    @precondition(lambda self: self.records and not self.query_empty)
    @rule()
    def run_killed(self) -> None:
        """A sync process killed (kill -9, out of memory) while it sends."""
        self.world.sandbox.faults = Faults(latency=0.05)
        try:
            result = self.world.run_killed(self.records)
        finally:
            self.world.sandbox.faults = Faults()
        for request in result.writes:
            if request.body and request.method != "DELETE":
                body = json.loads(request.body)
                phone = body.get("phone") or self.world.deleted_phone(
                    request.path.rsplit("/", 1)[-1]
                )
                self.in_doubt_tags.setdefault(phone, set()).update(body.get("tags") or ())
        self._after_run(result, clean=False)

    @precondition(lambda self: self.records and not self.query_empty)
    @rule(data=st.data())
    def two_runs_at_once(self, data: st.DataObject) -> None:
        """Run A reads the CRM and plans; the CRM changes; run B reads, plans and sends; then A
        sends. A must not write its older read over what B confirmed."""
        from erzy_pipelines.sync import run as sync_run

        gate, planned = threading.Event(), threading.Event()
        original = sync_run.plan_operations

        def plan_then_wait(*args: Any, **kwargs: Any) -> Any:
            plan = original(*args, **kwargs)
            if threading.current_thread().name == "model-run-a":
                planned.set()
                gate.wait(60)
            return plan

        sync_run.plan_operations = plan_then_wait
        try:
            with self.world.observing("concurrent", self.records) as seen:
                thread, box = self.world.run_in_thread()
                while thread.is_alive() and not planned.wait(0.05):
                    pass  # A reads and plans (or ends early: then B simply runs after it)
                record = self._pick(data)
                record.title = f"P{record.id} v{self.version + 1}"
                self._edited(record)
                code_b, rows_b = self.world.cli_run()
                gate.set()
                thread.join(120)
                assert not thread.is_alive(), "run A never finished"
                if "error" in box:
                    raise box["error"]
                seen["code"] = max(code_b, box["out"][0])
                seen["summary"] = (box["out"][1] or [{}])[0]
        finally:
            sync_run.plan_operations = original
            gate.set()
        result = seen["result"]
        clean = code_b == 0 and box["out"][0] == 0 and not rows_b[0].get("deferred")
        self._after_run(result, clean=clean and not seen["summary"].get("deferred"))

    # --- what every run must hold ----------------------------------------------------------------
    def _after_run(self, result: RunResult, *, clean: bool) -> None:
        self.runs.append(result)
        if os.environ.get("ERZY_MODEL_TRACE"):
            print(f"  {result.kind}: exit {result.code} {result.summary}", flush=True)
        for cid in result.created_ids:
            self.created_by[cid] = result.state
        self.check_deletions(result)
        self.check_keys(result)
        self.check_run_never_ok_with_work_left(result)
        self.check_requests_are_counted(result)
        full = result.kind in ("full", "reconcile", "concurrent")
        if full and clean and result.code == 0 and not self.query_empty:
            self.check_erzycall_matches_the_crm(reconciled=result.kind == "reconcile")
            if result.kind == "reconcile":
                self.drifted.clear()
            self.quiet = result.kind != "concurrent"
        if full and result.code == 0:
            self.last_read[result.state] = 0 if self.query_empty else len(self.records)

    def check_deletions(self, result: RunResult) -> None:
        """Nothing the sync did not create is ever deleted, nor a contact whose CRM record is
        present, and a read that collapsed (no row, or under half of the last one) deletes
        nothing."""
        deletes = [r for r in result.requests if r.method == "DELETE"]
        if not deletes:
            return
        assert self.removal, "a DELETE was sent with removal off"
        assert result.kind not in ("group", "dry"), f"a {result.kind} run deleted"
        read = 0 if self.query_empty else len(self.records)
        before = self.last_read.get(result.state, 0)
        assert read > 0 and read * 2 >= before, (
            f"{len(deletes)} DELETE(s) after a collapsed CRM read ({read} rows, {before} before)"
        )
        present = {r.phone for r in self.records.values() if r.phone}
        for request in deletes:
            cid = request.path.rsplit("/", 1)[-1]
            assert self.created_by.get(cid) == result.state, (
                f"deleted {cid}, which state {result.state!r} did not create "
                f"(created by {self.created_by.get(cid)!r})"
            )
            phone = self.world.deleted_phone(cid)
            assert phone not in present, f"deleted the contact of {phone}, still in the CRM"

    def check_keys(self, result: RunResult) -> None:
        """An idempotency key is never sent with two different bodies, nor by two states."""
        for request in result.writes:
            key = request.idempotency_key
            if not key or (request.method != "DELETE" and not request.body):
                continue  # a request cut off by a SIGKILL before its body arrived
            sent = (result.state, canonical(request.body))
            first = self.key_sent.setdefault(key, sent)
            assert first[0] == sent[0], f"key {key} sent by state {first[0]} and {sent[0]}"
            assert first[1] == sent[1], f"key {key} sent with two bodies: {first[1]} / {sent[1]}"

    def check_run_never_ok_with_work_left(self, result: RunResult) -> None:
        """A run that did not finish its work never says plain ``ok``."""
        summary = result.summary
        if summary.get("deferred"):
            assert summary.get("status") != "ok", (
                f"a {result.kind} run deferred {summary['deferred']} contact(s) and said ok"
            )

    def check_429s_within_the_wait_budget_are_waited_out(self, result: RunResult) -> None:
        """A 429 whose Retry-After fits the wait budget is waited out however often it comes:
        a burst of seven 1-second 429s never defers work as if the key's budget were spent."""
        if result.code == 0:
            assert not result.summary.get("deferred"), (
                f"a burst of 1 s 429s deferred {result.summary['deferred']} contact(s)"
            )

    def check_requests_are_counted(self, result: RunResult) -> None:
        """A run's ``requests`` figure is every request it made to the API (its retries, probes
        and listings included): what the budget, the ETA and the audit rely on."""
        if result.kind in ("killed", "concurrent") or result.code != 0:
            return  # a failed run's row may not exist (it failed before it began)
        assert result.summary["requests"] == len(result.requests), (
            f"a {result.kind} run says {result.summary['requests']} requests, the API saw "
            f"{len(result.requests)}"
        )

    def check_a_quiet_rerun_sends_nothing(self, result: RunResult) -> None:
        """A rerun with no change anywhere sends no write, and redoes no local work: every record
        is known by its fingerprint and every contact is settled."""
        assert not result.writes, (
            f"nothing changed, yet the run sent {[(r.method, r.path) for r in result.writes]}"
        )
        totals = self.world.last_run_totals()
        assert totals["records_normalized"] == 0, f"nothing changed, yet {totals}"
        assert totals["contacts_settled"] == totals["contacts"], f"nothing changed, yet {totals}"

    def check_erzycall_matches_the_crm(self, *, reconciled: bool) -> None:
        """After a clean full run, ErzyCall holds exactly what the CRM says in the fields the sync
        owns (a reconcile also repairs what agents changed or deleted), and what agents added is
        still there."""
        live = {c["phone"]: c for c in self.world.live()}
        for phone, want in expected_contacts(self.records).items():
            if phone in self.drifted and not reconciled:
                continue
            got = live.get(phone)
            assert got is not None, f"{phone} is in the CRM but not in ErzyCall"
            assert got["title"] == want.title, f"{phone}: title {got['title']!r} != {want.title!r}"
            tags = set(got["tags"])
            extra = tags - want.tags
            assert want.tags <= tags, f"{phone}: tags {sorted(tags)} lack {sorted(want.tags)}"
            others = (
                self.agent_tags.get(got["id"], set())
                | self.foreign_tags.get(got["id"], set())
                | self.in_doubt_tags.get(phone, set())
            )
            assert extra <= others, f"{phone}: tags {sorted(extra)} come from nowhere"
            # The groups of the memberships mapping are the sync's; a group that left the CRM
            # altogether is removed by the state that sent it, and is foreign to any other.
            mapped = {GROUP_IDS[g] for r in self.records.values() for g in r.groups}
            held = set(got["groupIds"]) & MANAGED_GROUPS
            assert held & mapped == want.groups, f"{phone}: groups {sorted(held)} != {want.groups}"
            stray = held - mapped - self.foreign_groups.get(got["id"], set())
            assert not stray, f"{phone}: groups {sorted(stray)} left the CRM but were kept"

    @invariant()
    def check_agents_additions_are_kept(self) -> None:
        """In merge mode, nothing ErzyCall's users added to a contact is lost."""
        live = {c["id"]: c for c in self.world.live()}
        for cid, tags in self.agent_tags.items():
            if cid in live:
                missing = tags - set(live[cid]["tags"])
                assert not missing, f"contact {cid} lost its agents' tags {sorted(missing)}"


def _settings() -> settings:
    return settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=SEED is None,
        print_blob=True,
        phases=list(Phase) if SHRINK else [Phase.explicit, Phase.reuse, Phase.generate],
    )


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry backoff in milliseconds (attempt counts and the 5-minute wait budget unchanged), so
    faults cost the model seconds, not minutes. A 429's Retry-After is still waited in full."""
    monkeypatch.setattr(
        client_module,
        "RetryPolicy",
        functools.partial(RetryPolicy, base_delay=0.01, max_delay=0.05),
    )


@pytest.mark.timeout(0)  # bounded by its examples and steps; a soak runs for as long as it asks
def test_the_sync_keeps_its_promises_through_a_deployments_life(fast_backoff: None) -> None:
    machine = SyncModel
    if SEED is not None:
        machine = seed(int(SEED))(SyncModel)  # type: ignore[assignment]
    run_state_machine_as_test(machine, settings=_settings())

