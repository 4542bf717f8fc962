"""Orchestration (issue 4): groups as partitions, backfills, the schedule, one shared budget.

Every test runs the real sync (Dagster, the sandbox over HTTP, a real CRM database) and states
the request counts it proves.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

from erzy_pipelines import cli
from erzy_pipelines.erzycall.client import ErzyCallClient
from erzy_pipelines.sandbox import DEMO_API_KEY
from erzy_pipelines_tests.orchestration.conftest import GROUP_IDS, SyncHarness, person

BACKFILL_GROUPS = ("vip", "newsletter", "trial")


def _groups_of(i: int) -> list[str]:
    """Person i's groups: even → vip, multiple of 3 → newsletter, of 5 → trial (30 is in all)."""
    return [g for g, d in zip(BACKFILL_GROUPS, (2, 3, 5), strict=True) if i % d == 0]


def _phone(i: int) -> str:
    return f"+1415555{1000 + i:04d}"


def _max_in_window(times: list[float], seconds: float) -> int:
    """Most requests in any sliding window (t - seconds, t]: what the sandbox counts."""
    times, best, start = sorted(times), 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


def _spawn_group_syncs(h: SyncHarness, groups: tuple[str, ...], tag: str) -> list[dict[str, Any]]:
    """Start one `erzy-pipelines sync --groups G` process per group and wait for all.

    Each process has its own Dagster instance (as separate hosts would), so nothing but the
    state database coordinates them: its leases and its shared rate-limit budget. The processes
    run the real CLI through ``erzy_pipelines_tests.faults._child`` with its file barrier: each
    plans, then waits; only when all have planned does the test let them send, so the runs
    certainly overlap and plan from the same state.
    """
    barrier = h.tmp_path / f"barrier-{tag}"
    barrier.mkdir()
    procs = []
    for group in groups:
        env = dict(
            os.environ,
            DAGSTER_HOME=str(h.tmp_path / f"dagster-home-{group}"),
            ERZY_FAULTS_BARRIER=str(barrier / group),
        )
        log = (h.tmp_path / f"{tag}-{group}.log").open("w+")
        proc = subprocess.Popen(
            [sys.executable, "-m", "erzy_pipelines_tests.faults._child", "sync", "--groups", group],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append((group, proc, log))
    out = []
    try:
        deadline = time.monotonic() + 120
        while not all((barrier / f"{g}.ready").exists() for g in groups):
            for group, proc, log in procs:
                if proc.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"{group} exited before sending:\n{log.read()[-3000:]}")
            assert time.monotonic() < deadline, "the runs never got to sending"
            time.sleep(0.02)
        (barrier / "go").touch()
        for group, proc, log in procs:
            code = proc.wait(timeout=120)
            log.seek(0)
            out.append({"group": group, "code": code, "output": log.read()})
    finally:
        for _, proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    for result in out:
        assert result["code"] == 0, f"{result['group']}:\n{result['output'][-3000:]}"
    return out


def _all_overlap(runs: list[dict[str, Any]]) -> bool:
    """Every run started before any run finished: one instant when all were running."""
    return max(r["started_at"] for r in runs) < min(r["finished_at"] for r in runs)


def _expected_remote(i: int, **overrides: Any) -> dict[str, Any]:
    expected = {
        "title": f"Person {i}",
        "email": f"person{i}@example.com",
        "tags": ["customer"],
        "customFields": {"company": "Acme"},
        "groupIds": sorted(GROUP_IDS[g] for g in _groups_of(i)),
    }
    expected.update(overrides)
    return expected


def _remote_view(contact: dict[str, Any]) -> dict[str, Any]:
    view = {k: contact.get(k) for k in ("title", "email", "tags", "customFields")}
    view["groupIds"] = sorted(contact.get("groupIds") or [])
    return view


def test_concurrent_backfill_of_three_groups_shares_one_budget(
    harness: SyncHarness, pg_url: str, monkeypatch
):
    """Three group runs at once, in three processes released together after planning, against a
    sandbox allowing 10 requests per 2 s: the runs overlap, each contact is sent once with all
    its groups, and no 2 s window holds more than 10 requests. Figures: 22 POSTs for 22 grouped
    contacts (8 of them in 2-3 of the groups, 9 planned creates resolved without a request),
    then 4 PATCHes for 4 changed multi-group contacts; 429s are reported."""
    h = harness
    # The state database on PostgreSQL, as a multi-host deployment shares it (row leases and the
    # rate-limit budget under SELECT ... FOR UPDATE); state/test_rate_budget.py covers SQLite.
    h.state_url = pg_url
    monkeypatch.setenv("ERZY_STATE_DATABASE_URL", pg_url)
    limit, seconds = 10, 2.0
    h.sandbox.set_limits(((limit, seconds),))
    monkeypatch.setenv("ERZYCALL_RATE_LIMITS", f"{limit}/{seconds:g}")
    people_ids = range(1, 31)
    h.add_people(person(i) for i in people_ids)
    h.add_memberships((i, g) for i in people_ids for g in _groups_of(i))
    grouped = [i for i in people_ids if _groups_of(i)]
    multi = [i for i in grouped if len(_groups_of(i)) > 1]
    assert (len(grouped), len(multi)) == (22, 8)

    outputs = _spawn_group_syncs(h, BACKFILL_GROUPS, "first")
    log = h.sandbox.request_log
    writes = [r for r in log if r.method in ("POST", "PATCH", "DELETE") and r.status != 429]
    accounts = [line for o in outputs for line in o["output"].splitlines() if "account" in line]
    assert [w.method for w in writes] == ["POST"] * len(grouped), (
        Counter((w.method, w.status) for w in writes),
        accounts,
    )
    # The key was new to the state: the runs that met it at once all use one account.
    assert len(h.state().runs()) == 3 and len({r["account_id"] for r in h.state().runs()}) == 1
    remote = h.remote_by_phone()  # asserts one contact per phone
    assert set(remote) == {_phone(i) for i in grouped}, "ungrouped contacts are not in the backfill"
    for i in grouped:
        assert _remote_view(remote[_phone(i)]) == _expected_remote(i), i
    first_429 = sum(r.status == 429 for r in log)
    assert _max_in_window([r.at for r in log], seconds) <= limit
    runs = h.state().runs()
    # a run that found a contact claimed by another (which sent it) says so: `deferred`
    assert len(runs) == 3 and all(
        r["status"] == ("deferred" if r["deferred"] else "succeeded") for r in runs
    )
    assert sum(r["created"] for r in runs) == len(grouped)
    assert _all_overlap(runs), runs
    outcomes = Counter(
        (r["outcome"], r["error_code"]) for r in h.state().audit_rows() if r["action"] == "create"
    )
    # Each contact is created by exactly one run; the others found it done or held by that run.
    # All three planned before any sent (the barrier), so every extra group of a multi-group
    # contact is one planned create that met another run's lease or finished work: 9 of them.
    assert outcomes[("created", None)] == len(grouped)
    contended = sum(len(_groups_of(i)) - 1 for i in multi)
    assert contended == 9
    assert (
        outcomes[("unchanged", "done_by_another_run")]
        + outcomes[("deferred", "claimed_by_another_run")]
        == contended
    ), outcomes
    assert set(outcomes) <= {
        ("created", None),
        ("unchanged", "done_by_another_run"),
        ("deferred", "claimed_by_another_run"),
    }

    # Change four contacts that sit in several groups; every group run plans the same PATCH.
    mark = len(log)
    h.update_person(6, full_name="Six Renamed")  # vip + newsletter
    h.update_person(30, tags="customer,all-three")  # vip + newsletter + trial
    h.update_person(15, email="fifteen@example.com")  # newsletter + trial
    h.remove_membership(10, "trial")  # vip + trial → vip only
    _spawn_group_syncs(h, BACKFILL_GROUPS, "second")
    second_runs = [r for r in h.state().runs() if r["run_id"] not in {x["run_id"] for x in runs}]
    assert len(second_runs) == 3 and _all_overlap(second_runs), second_runs
    log = h.sandbox.request_log
    writes = [r for r in log[mark:] if r.method in ("POST", "PATCH") and r.status != 429]
    assert sorted(w.method for w in writes) == ["PATCH"] * 4
    bodies = sorted(json.dumps(json.loads(w.body), sort_keys=True) for w in writes)
    assert bodies == sorted(
        json.dumps(b, sort_keys=True)
        for b in (
            {"title": "Six Renamed"},
            {"tags": ["customer", "all-three"]},
            {"email": "fifteen@example.com"},
            {"groupIds": ["grp_vip"]},
        )
    )
    remote = h.remote_by_phone()
    assert _remote_view(remote[_phone(6)]) == _expected_remote(6, title="Six Renamed")
    assert _remote_view(remote[_phone(30)]) == _expected_remote(
        30, tags=["customer", "all-three"]
    )
    assert _remote_view(remote[_phone(15)]) == _expected_remote(15, email="fifteen@example.com")
    assert _remote_view(remote[_phone(10)]) == _expected_remote(10, groupIds=["grp_vip"])
    assert _max_in_window([r.at for r in log], seconds) <= limit
    total_429 = sum(r.status == 429 for r in log)
    print(
        f"\nconcurrent backfill: first pass {len(log[:mark])} requests "
        f"({first_429} x 429), second pass {len(log) - mark} requests "
        f"({total_429 - first_429} x 429); max {_max_in_window([r.at for r in log], seconds)} "
        f"requests in any {seconds:g}s window (limit {limit}); first-pass create outcomes "
        f"{dict(outcomes)}"
    )


def _run_ids(h: SyncHarness) -> list[str]:
    """Run ids in the state database, oldest first."""
    return [r["run_id"] for r in reversed(h.state().runs(limit=100))]


def _writes(h: SyncHarness) -> list[Any]:
    return [w for w in h.writes_since_sync() if w.status != 429]


def test_group_backfill_keeps_other_memberships_and_removal_drops_only_that_group(harness):
    """Person 1 is in vip and newsletter. Backfilling vip alone sends both groups (2 POSTs for
    vip's 2 members); removing person 1 from vip and syncing vip costs 1 PATCH of groupIds that
    keeps newsletter; newsletter's own run then costs nothing. When the last member leaves a
    group its partition goes away and the daily (full) run drops the membership: 1 PATCH."""
    h = harness
    h.add_people(person(i) for i in range(1, 5))
    h.add_memberships([(1, "vip"), (1, "newsletter"), (2, "vip"), (3, "newsletter")])

    code, summaries = h.sync(["vip"])
    assert code == 0 and summaries[0]["scope"] == "vip"
    assert sorted(w.method for w in _writes(h)) == ["POST", "POST"]
    remote = h.remote_by_phone()
    assert set(remote) == {_phone(1), _phone(2)}
    assert sorted(remote[_phone(1)]["groupIds"]) == ["grp_newsletter", "grp_vip"]

    h.remove_membership(1, "vip")
    code, summaries = h.sync(["vip"])
    assert code == 0
    writes = _writes(h)
    assert [(w.method, json.loads(w.body)) for w in writes] == [
        ("PATCH", {"groupIds": ["grp_newsletter"]})
    ]
    assert writes[0].path.endswith(h.remote_by_phone()[_phone(1)]["id"])
    remote = h.remote_by_phone()
    assert remote[_phone(1)]["groupIds"] == ["grp_newsletter"]
    assert remote[_phone(2)]["groupIds"] == ["grp_vip"]

    code, summaries = h.sync(["newsletter"])  # person 1 unchanged, person 3 new
    assert code == 0
    assert [w.method for w in _writes(h)] == ["POST"]
    assert summaries[0]["unchanged"] == 1

    # The last member leaves vip: no vip partition remains, the full run fixes ErzyCall.
    h.remove_membership(2, "vip")
    assert h.sync(["vip"])[0] == 2
    code, summaries = h.sync()
    assert code == 0
    writes = sorted((w.method, json.loads(w.body)) for w in _writes(h))
    assert [m for m, _ in writes] == ["PATCH", "POST"]
    assert writes[0][1] == {"groupIds": []} and writes[1][1]["phone"] == _phone(4)
    remote = h.remote_by_phone()
    assert remote[_phone(2)]["groupIds"] == []
    assert set(remote) == {_phone(i) for i in range(1, 5)}  # person 4 (ungrouped) too


def test_duplicate_records_in_two_groups_make_one_stable_contact_whichever_group_runs(harness):
    """Two CRM records with one phone, one in vip and one in trial, never synced together: the
    first group run merges both (1 POST with both groups, the newer record's title); the other
    group's run and the full run then send nothing, instead of overwriting each other."""
    h = harness
    h.add_people([person(1), person(2, phone="415-555-1001", full_name="Newer")])
    h.add_memberships([(1, "vip"), (2, "trial")])
    code, summaries = h.sync(["vip"])
    assert code == 0 and summaries[0]["merged"] == 1
    assert [w.method for w in _writes(h)] == ["POST"]
    contact = h.remote_by_phone()[_phone(1)]
    assert (contact["title"], sorted(contact["groupIds"])) == ("Newer", ["grp_trial", "grp_vip"])
    for groups in (["trial"], ["vip"], None):
        code, summaries = h.sync(groups)
        assert code == 0 and _writes(h) == [], groups
    assert h.remote_by_phone()[_phone(1)]["groupIds"] == contact["groupIds"]


def test_request_cap_defers_the_rest_which_go_first_next_run(harness, monkeypatch):
    """M = 10 new contacts, cap K = 4: run 1 sends 4 and defers 6 (audited `deferred`, backlog
    6 with its ETA in the metadata); 3 more contacts whose phones sort first are added; run 2
    (cap 6) sends the 6 deferred first and defers the 3 new; run 3 sends those 3. 13 POSTs."""
    h = harness
    # The client keeps 4 requests per hour, so the backlog's ETA is easy to read (1h 00m for 6);
    # the cap stops run 1 before it would have to wait.
    monkeypatch.setenv("ERZYCALL_RATE_LIMITS", "4/3600")
    h.add_people(person(i) for i in range(11, 21))

    code, summaries = h.sync(max_requests=4)
    assert code == 0
    assert [w.method for w in _writes(h)] == ["POST"] * 4
    run = summaries[0]
    assert (run["created"], run["deferred"], run["requests"]) == (4, 6, 4)
    first_run = _run_ids(h)[-1]
    audit = h.state().audit_rows(run_id=first_run)
    deferred = sorted(r["phone"] for r in audit if r["outcome"] == "deferred")
    assert deferred == [_phone(i) for i in range(15, 21)]
    assert {r["error_code"] for r in audit if r["outcome"] == "deferred"} == {"request_budget"}
    meta = h.run_totals()
    assert meta["requests_needed"] == 10 and meta["requests_allowed"] == 4
    assert meta["request_cap"] == 4 and meta["requests_spent"] == 4
    assert meta["backlog"] == 6 and meta["backlog_eta"] == "1h 00m"
    assert meta["backlog_eta_seconds"] == 3600.0
    assert meta["eta"] == "2h 00m"  # 10 requests at 4/h: 0, 4 and 8 → two waits
    assert meta["eta_seconds"] == 7200.0

    monkeypatch.setenv("ERZYCALL_RATE_LIMITS", "10000/60")
    h.add_people(person(i) for i in range(1, 4))  # +14155551001..3 sort before the deferred
    code, summaries = h.sync(max_requests=6)
    assert code == 0
    sent = [json.loads(w.body)["phone"] for w in _writes(h)]
    assert sent == deferred, "the deferred contacts were not first in line"
    assert summaries[0]["created"] == 6 and summaries[0]["deferred"] == 3
    assert h.run_totals()["backlog"] == 3

    code, summaries = h.sync()
    assert code == 0
    assert [json.loads(w.body)["phone"] for w in _writes(h)] == [_phone(i) for i in range(1, 4)]
    assert summaries[0]["deferred"] == 0
    meta = h.run_totals()
    assert meta["backlog"] == 0 and meta["backlog_eta"] == "0s"
    assert len(h.remote_by_phone()) == 13
    assert h.sync()[1][0]["requests"] == 0


def _plan_rows(h: SyncHarness, run_id: str, outcomes: set[str]) -> list[tuple[str, str]]:
    rows = h.state().audit_rows(run_id=run_id)
    return sorted((r["phone"], r["action"]) for r in rows if r["outcome"] in outcomes)


def test_dry_run_sends_nothing_and_the_real_run_executes_exactly_its_plan(harness):
    """After a first sync of 8: 2 new contacts, 3 changed (one leaves a group), 1 bad phone.
    The dry run sends 0 requests and plans 2 creates + 3 updates; the real run then sends
    exactly those 5 (phone, action) pairs, 5 requests."""
    h = harness
    h.add_people(person(i) for i in range(1, 9))
    h.add_memberships([(1, "vip"), (2, "vip"), (2, "trial")])
    assert h.sync()[0] == 0
    h.add_people([person(9), person(10), person(11, phone="not a phone")])
    h.update_person(3, full_name="Changed Three")
    h.update_person(4, notes="a note")
    h.remove_membership(2, "trial")

    code, summaries = h.sync(dry_run=True)
    assert code == 0
    assert h.requests_since_sync() == [], "a dry run sent a request"
    dry_run_id = _run_ids(h)[-1]
    planned = _plan_rows(h, dry_run_id, {"planned"})
    assert planned == sorted(
        [(_phone(9), "create"), (_phone(10), "create")]
        + [(_phone(i), "update") for i in (2, 3, 4)]
    )
    assert summaries[0]["planned"] == 5 and summaries[0]["rejected"] == 1
    # Person 2 leaving trial changes groupIds: reading the contact first (so groups added in
    # ErzyCall are kept) is part of the plan: 5 writes + 1 read.
    dry_meta = h.run_totals()
    assert dry_meta["plan_only"] is True and dry_meta["requests_needed"] == 6
    assert dry_meta["requests_spent"] == 0
    assert h.instance.get_runs(limit=1)[0].job_name == "erzycall_plan"

    code, summaries = h.sync()
    assert code == 0
    real_run_id = _run_ids(h)[-1]
    assert _plan_rows(h, real_run_id, {"created", "updated"}) == planned
    requests = h.requests_since_sync()
    assert len(requests) == dry_meta["requests_needed"] == 6
    assert [r.method for r in requests].count("GET") == 1
    assert summaries[0]["rejected"] == 1


def test_cli_sync_groups_runs_the_chosen_groups_and_refuses_unknown_ones(
    harness, monkeypatch, capsys
):
    """`erzy-pipelines sync --groups vip,trial`: one run per group, only their members sent
    (3 POSTs; the contact in both groups once). An unknown group: exit 2, nothing sent."""
    h = harness
    monkeypatch.setenv("DAGSTER_HOME", str(h.tmp_path / "dagster_home"))
    h.add_people(person(i) for i in range(1, 7))
    h.add_memberships([(1, "vip"), (2, "vip"), (2, "trial"), (3, "trial"), (4, "newsletter")])

    assert cli.main(["sync", "--groups", "vip,trial"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    scopes = [row[0] for row in rows if row and row[0] in ("vip", "trial", "all")]
    assert scopes == ["vip", "trial"]
    assert set(h.remote_by_phone()) == {_phone(1), _phone(2), _phone(3)}
    assert len(h.sandbox.request_log) == 3

    assert cli.main(["sync", "--groups", "vip,nosuchgroup"]) == 2
    err = capsys.readouterr().err
    assert "unknown group(s) nosuchgroup" in err and "known: " in err and "vip" in err
    assert len(h.sandbox.request_log) == 3

    assert cli.main(["sync", "--groups", "_ungrouped"]) == 0  # contacts 5 and 6
    assert set(h.remote_by_phone()) == {_phone(i) for i in (1, 2, 3, 5, 6)}


def test_full_resync_lists_erzycall_and_fixes_hand_made_drift(harness):
    """150 contacts synced; by hand in ErzyCall two titles change and one contact is deleted.
    A normal sync sees nothing (0 requests). `full_resync` costs ⌈150/100⌉ = 2 list requests,
    2 PATCHes of the drifted title and 1 POST; a second full resync: 2 list requests only."""
    h = harness
    n = 150
    h.add_people(person(i) for i in range(1, n + 1))
    assert h.sync()[0] == 0
    remote = h.remote_by_phone()
    with ErzyCallClient(api_key=DEMO_API_KEY, base_url=h.sandbox.base_url) as client:
        client.update_contact(remote[_phone(7)]["id"], {"title": "Edited by hand"}, "drift-1")
        client.update_contact(remote[_phone(99)]["id"], {"title": "Also edited"}, "drift-2")
        client.delete_contact(remote[_phone(120)]["id"], idempotency_key="drift-3")

    code, summaries = h.sync()
    assert code == 0 and h.requests_since_sync() == []

    code, summaries = h.sync(full_resync=True)
    assert code == 0
    requests = h.requests_since_sync()
    lists = [r for r in requests if r.method == "GET"]
    assert len(lists) == math.ceil(n / 100) == 2
    writes = sorted((r.method, r.body) for r in requests if r.method != "GET")
    assert [m for m, _ in writes] == ["PATCH", "PATCH", "POST"]
    patches = [json.loads(body) for method, body in writes if method == "PATCH"]
    assert sorted(patches, key=str) == [{"title": "Person 7"}, {"title": "Person 99"}]
    assert json.loads(writes[-1][1])["phone"] == _phone(120)
    remote = h.remote_by_phone()
    assert len(remote) == n
    assert remote[_phone(7)]["title"] == "Person 7" and remote[_phone(99)]["title"] == "Person 99"
    assert summaries[0]["requests"] == 5

    code, summaries = h.sync(full_resync=True)
    assert code == 0
    assert [r.method for r in h.requests_since_sync()] == ["GET", "GET"]
