"""The plan executor against the sandbox: the windows where an outcome is unknown or stale.

Each test is a regression for a way the end state could silently drift from the CRM.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from erzy_pipelines.core.normalize import Contact, normalize_row
from erzy_pipelines.core.plan import plan_operations
from erzy_pipelines.erzycall import ErzyCallClient
from erzy_pipelines.erzycall.retry import RetryPolicy
from erzy_pipelines.sandbox import DEMO_API_KEY
from erzy_pipelines.state import StateStore
from erzy_pipelines.sync.run import RunRequest, execute_run
from erzy_pipelines.sync.send import Budget, execute_plan

PHONE = "+14155550123"


def contact(
    title: str, groups: list[str] | None = None, phone: str = PHONE, crm_id: str = "1"
) -> Contact:
    result = normalize_row(
        {"crm_id": crm_id, "title": title, "phone": phone, "group_ids": groups or []}
    )
    assert isinstance(result, Contact)
    return result


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")


def client(sandbox, attempts: int = 6) -> ErzyCallClient:
    return ErzyCallClient(
        DEMO_API_KEY, sandbox.base_url, retry=RetryPolicy(max_attempts=attempts, base_delay=0.01)
    )


def sync(store: StateStore, sandbox, contacts: list[Contact], run_id: str, **kwargs) -> list[tuple]:
    plan = plan_operations(contacts, store.load_states([c.phone for c in contacts]))
    with client(sandbox, kwargs.pop("attempts", 6)) as api:
        report = execute_plan(
            plan, client=api, store=store, run_id=run_id, partition_key="all", **kwargs
        )
    return [(r.action, r.outcome) for r in report.results]


def remote(sandbox) -> dict[str, dict]:
    return {c["phone"]: c for c in sandbox.contacts()}


def test_a_write_of_unknown_outcome_is_never_taken_as_unchanged(sandbox, store):
    sync(store, sandbox, [contact("Ann", ["grp_vip"])], "r1")
    sandbox.faults.lose_response_rate = 1.0  # the PATCH is applied, its answer never arrives
    assert sync(
        store, sandbox, [contact("Ann", ["grp_vip", "grp_newsletter"])], "r2", attempts=1
    ) == [("update", "failed")]
    sandbox.faults.lose_response_rate = 0.0
    assert remote(sandbox)[PHONE]["groupIds"] == ["grp_newsletter", "grp_vip"]
    # the CRM goes back to what was last confirmed: the in-doubt write must still be undone
    assert sync(store, sandbox, [contact("Ann", ["grp_vip"])], "r3") == [("update", "updated")]
    assert remote(sandbox)[PHONE]["groupIds"] == ["grp_vip"]
    assert sync(store, sandbox, [contact("Ann", ["grp_vip"])], "r4") == []


def test_adopting_after_a_crash_never_reuses_a_key_for_another_body(sandbox, store):
    existing = sandbox.add_contact_direct({"title": "Hand made", "phone": PHONE, "tags": ["x"]})
    wanted = contact("CRM name")

    class Crash(BaseException):
        pass

    def crash(*args, **kwargs):
        raise Crash

    original = store.record_success
    store.record_success = crash  # the adopt PATCH is sent, then the process dies
    with pytest.raises(Crash):
        sync(store, sandbox, [wanted], "r1")
    store.record_success = original
    store.release_all("r1")
    with client(sandbox) as api:  # someone edits the contact in the dashboard meanwhile
        api.update_contact(existing["id"], {"title": "Edited by hand"}, "manual-edit-1")
    assert sync(store, sandbox, [wanted], "r2") == [("create", "adopted")]
    assert remote(sandbox)[PHONE]["title"] == "CRM name"
    assert sync(store, sandbox, [wanted], "r3") == []


def test_a_plan_made_before_another_run_sent_is_replanned_under_the_lease(sandbox, store):
    sync(store, sandbox, [contact("Ann", ["grp_vip"])], "r0")
    states = store.load_states([PHONE])
    # two runs plan from the same state; A adds a group, B (planned alike) renames only
    plan_a = plan_operations([contact("Ann", ["grp_vip", "grp_newsletter"])], states)
    plan_b = plan_operations([contact("Bob", ["grp_vip"])], states)
    assert plan_b.operations[0].body == {"title": "Bob"}
    with client(sandbox) as api:
        execute_plan(plan_a, client=api, store=store, run_id="A", partition_key="all")
        execute_plan(plan_b, client=api, store=store, run_id="B", partition_key="all")
    held = remote(sandbox)[PHONE]
    # B re-planned against A's write: it also took A's group back out, and the state says so
    assert (held["title"], held["groupIds"]) == ("Bob", ["grp_vip"])
    assert store.load_states([PHONE])[PHONE].last_payload["groupIds"] == ["grp_vip"]
    assert sync(store, sandbox, [contact("Bob", ["grp_vip"])], "r3") == []


def test_a_deferred_contact_reverted_in_the_crm_leaves_the_backlog(sandbox, store):
    one, two = "+14155550121", "+14155550122"
    first = [contact("A", phone=one, crm_id="1"), contact("B", phone=two, crm_id="2")]
    sync(store, sandbox, first, "r0")
    changed = [contact("A2", phone=one, crm_id="1"), contact("B2", phone=two, crm_id="2")]
    outcomes = sync(store, sandbox, changed, "r1", budget=Budget(max_requests=1))
    assert outcomes == [("update", "updated"), ("update", "deferred")]
    assert store.backlog() == 1
    reverted = [contact("A2", phone=one, crm_id="1"), contact("B", phone=two, crm_id="2")]
    with client(sandbox) as api:
        summary = execute_run(RunRequest(
            contacts=reverted,
            rejects=[],
            merges=[],
            store=store,
            client_factory=lambda sleep: api,
            run_id="r2",
            partition_key="all",
        ))
    assert summary.requests == 0
    assert store.backlog() == 0


def test_a_run_never_writes_an_older_crm_read_over_a_newer_confirmed_one(sandbox, store):
    """Run A read the CRM (title T1), then run B read it later (T2) and sent T2 first. A holds
    an older value: it must not PATCH T1 back over T2. A run that read later still sends."""
    sync(store, sandbox, [contact("T0")], "r0", read_started=50.0)
    states = store.load_states([PHONE])
    plan_a = plan_operations([contact("T1")], states)  # read at 100
    plan_b = plan_operations([contact("T2")], states)  # read at 200
    with client(sandbox) as api:
        execute_plan(plan_b, client=api, store=store, run_id="B", partition_key="all",
                     read_started=200.0)
        report = execute_plan(plan_a, client=api, store=store, run_id="A", partition_key="all",
                              read_started=100.0)
    assert [(r.outcome, r.error_code) for r in report.results] == [
        ("unchanged", "done_by_another_run")
    ]
    assert report.requests == 0 and remote(sandbox)[PHONE]["title"] == "T2"
    assert store.load_states([PHONE])[PHONE].source_read_at == 200.0
    # a run whose read began after B's sends its (newer) value
    assert sync(store, sandbox, [contact("T3")], "C", read_started=300.0) == [
        ("update", "updated")
    ]
    assert remote(sandbox)[PHONE]["title"] == "T3"
