"""The CLI as users run it: several syncs from one folder, one DAGSTER_HOME kept across runs,
processes killed with SIGKILL or stopped with SIGTERM, runs waiting for the erzycall_api slot.

Every sync here is a real ``python -m erzy_pipelines.cli`` process against a real sandbox.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import dagster as dg
import pytest

from erzy_pipelines.orchestration.pool import POOL
from erzy_pipelines_tests.cli.conftest import Sync, e164, person, summary_row

pytestmark = pytest.mark.timeout(300)
TICKS = os.sysconf("SC_CLK_TCK")


def wait_until(what: str, condition, timeout: float = 60.0, every: float = 0.05) -> float:
    """Poll until ``condition()`` is true; return the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def expected(world: Sync, ids: range) -> dict[str, dict]:
    """What ErzyCall must hold for people ``ids`` of ``person()``, by phone."""
    return {
        e164(i): {"title": f"Person {i}", "email": f"person{i}@example.com", "tags": ["customer"]}
        for i in ids
    }


def assert_holds_exactly(world: Sync, ids: range) -> None:
    remote = world.sandbox.contacts()
    phones = [c["phone"] for c in remote]
    assert len(phones) == len(set(phones)), "two contacts share a phone"
    want = expected(world, ids)
    assert sorted(phones) == sorted(want), "ErzyCall does not hold exactly this CRM's contacts"
    for contact in remote:
        got = {k: contact.get(k) for k in ("title", "email", "tags")}
        assert got == want[contact["phone"]], contact["phone"]


def run_status(world: Sync, run_id: str) -> dg.DagsterRunStatus:
    with world.instance() as instance:
        return instance.get_run_by_id(run_id).status


def sync_runs(world: Sync) -> list[dg.DagsterRun]:
    with world.instance() as instance:
        return list(reversed(instance.get_runs()))  # oldest first


def slot_holders(world: Sync) -> list[str]:
    with world.instance() as instance:
        info = instance.event_log_storage.get_concurrency_info(POOL)
        return [s.run_id for s in info.claimed_slots]


def leases_of(world: Sync, run_id: str) -> int:
    with world.state() as store:
        return sum(1 for holder in store.lease_holders() if holder == run_id)


def slow_down(world: Sync, seconds: float) -> None:
    world.sandbox.app.injector.faults.latency = seconds


# ------------------------------------------------------------------------------- isolation


def test_two_unrelated_syncs_started_together_from_one_folder_send_only_their_own(
    make_sync, workdir
):
    """Two CRMs, two ErzyCall accounts, two state databases and DAGSTER_HOMEs, one folder, at
    the same time: each account holds exactly its own CRM's contacts; reruns spend nothing;
    nothing is left in the folder."""
    a, b = make_sync("a"), make_sync("b")
    a.add_people(person(i) for i in range(1, 31))
    b.add_people(person(i) for i in range(101, 141))
    a.add_memberships([(1, "vip"), (2, "vip")])
    b.add_memberships([(101, "vip"), (102, "newsletter")])
    for world in (a, b):
        slow_down(world, 0.02)  # both are still sending when the other starts
    started = [world.spawn("sync") for world in (a, b)]
    for proc, out in started:
        assert proc.wait(180) == 0, out.read_text()[-3000:]
    assert_holds_exactly(a, range(1, 31))
    assert_holds_exactly(b, range(101, 141))

    marks = {w.name: len(w.sandbox.request_log) for w in (a, b)}
    again = [(world, *world.spawn("sync")) for world in (a, b)]
    for world, proc, out in again:
        assert proc.wait(180) == 0, out.read_text()[-3000:]
        assert world.requests(marks[world.name]) == [], f"{world.name}'s rerun sent requests"
        assert summary_row(out.read_text())["requests"] == "0"
    assert list(workdir.iterdir()) == [], "a sync left files in the working folder"
    for world in (a, b):
        assert {r.job_name for r in sync_runs(world)} == {"erzycall_sync"}


def test_a_dry_run_then_a_crm_edit_then_a_group_sync_sends_the_edit(make_sync):
    """Nothing from an earlier run is reused: the group sync reads the CRM again."""
    a = make_sync()
    a.add_people(person(i) for i in range(1, 6))
    a.add_memberships([(1, "vip"), (2, "vip")])
    assert a.run("sync")[0] == 0
    a.update_person(1, full_name="Edited before the dry run")
    code, out = a.run("sync", "--dry-run", "--groups", "vip")
    assert code == 0 and summary_row(out)["planned"] == "1", out
    a.update_person(1, full_name="Edited after the dry run")
    mark = len(a.sandbox.request_log)
    code, out = a.run("sync", "--groups", "vip")
    assert code == 0, out
    (patch,) = a.writes(mark)
    assert "Edited after the dry run" in patch.body and "before" not in patch.body


# ------------------------------------------------------------------------------- crashes


def test_sigkill_mid_upsert_then_the_next_sync_finishes_with_the_exact_state(make_sync):
    a = make_sync()
    a.add_people(person(i) for i in range(1, 41))
    slow_down(a, 0.15)  # a request is in flight most of the time: the kill lands in one
    proc, out = a.spawn("sync")
    wait_until("10 writes", lambda: len(a.writes()) >= 10)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    (dead,) = sync_runs(a)
    assert run_status(a, dead.run_id) == dg.DagsterRunStatus.STARTED
    assert slot_holders(a) == [dead.run_id], "the killed run should still hold the slot"
    slow_down(a, 0.0)

    mark = len(a.sandbox.request_log)
    started = time.monotonic()
    proc, out = a.spawn("sync")
    waited = wait_until("the next sync to send", lambda: len(a.writes(mark)) > 0, timeout=60)
    assert proc.wait(120) == 0, out.read_text()[-3000:]
    text = out.read_text()
    assert f"note: run {dead.run_id}" in text and "is gone" in text, text[-2000:]
    assert waited < 60, f"the next sync started sending after {time.monotonic() - started:.0f}s"
    assert_holds_exactly(a, range(1, 41))
    assert run_status(a, dead.run_id) == dg.DagsterRunStatus.FAILURE
    assert slot_holders(a) == [] and leases_of(a, dead.run_id) == 0
    with a.state() as store:
        assert not [s for s in store.load_states().values() if s.pending_hash or s.deferred]

    mark = len(a.sandbox.request_log)
    code, text = a.run("sync")
    assert code == 0 and a.requests(mark) == [] and summary_row(text)["requests"] == "0"


def test_a_waiting_sync_says_who_holds_the_slot_sleeps_and_frees_it_when_the_holder_dies(
    make_sync,
):
    """B waits for A's slot: it says once which run holds it and since when, uses next to no
    CPU while it waits, and when A is killed it frees the slot itself and finishes the job."""
    a = make_sync()
    a.add_people(person(i) for i in range(1, 41))
    a.add_memberships([(i, "vip") for i in range(35, 41)])  # vip: the last phones A gets to
    slow_down(a, 0.3)
    holder, _ = a.spawn("sync", log="holder")
    wait_until("A to send", lambda: len(a.writes()) >= 3)
    (run_a,) = sync_runs(a)
    waiter, out = a.spawn("sync", "--groups", "vip", log="waiter")
    wait_until("B to wait", lambda: "Waiting for the erzycall_api pool" in out.read_text())
    before = cpu_seconds(waiter.pid)
    time.sleep(3)
    assert cpu_seconds(waiter.pid) - before < 0.3, "the waiting sync burns CPU"

    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    slow_down(a, 0.0)
    assert waiter.wait(60) == 0, out.read_text()[-3000:]
    text = out.read_text()
    assert text.count("Waiting for the erzycall_api pool") == 1
    assert f"run {run_a.run_id} (erzycall_sync, all groups, STARTED) holds its slot since" in text
    assert f"Freed the erzycall_api slot held by run {run_a.run_id}" in text
    assert run_status(a, run_a.run_id) == dg.DagsterRunStatus.FAILURE
    code, _ = a.run("sync")
    assert code == 0
    assert_holds_exactly(a, range(1, 41))


# ------------------------------------------------------------------------------- stopping

SLOW_CONTACTS_SQL = """
SELECT id AS crm_id, full_name AS title, phone, email, notes, tags, country, updated_at,
       company AS custom_company
FROM people p
WHERE (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000 + p.id * 0)
       SELECT count(*) FROM n) > 0
"""


def _stopped(world: Sync, proc, out: Path, *, sig: int = signal.SIGTERM, within: float = 10) -> str:
    """Send ``sig`` to ``proc``; it must exit within ``within`` seconds, its run canceled."""
    sent = time.monotonic()
    os.kill(proc.pid, sig)
    code = proc.wait(60)
    took = time.monotonic() - sent
    text = out.read_text()
    assert took < within, f"stopping took {took:.1f}s\n{text[-2000:]}"
    assert code == 130, text[-3000:]
    return text


def test_sigterm_while_sending_finishes_the_request_in_flight_and_cancels_the_run(make_sync):
    a = make_sync()
    a.add_people(person(i) for i in range(1, 41))
    slow_down(a, 0.2)
    proc, out = a.spawn("sync")
    wait_until("5 writes", lambda: len(a.writes()) >= 5)
    text = _stopped(a, proc, out)
    (run,) = sync_runs(a)
    assert run_status(a, run.run_id) == dg.DagsterRunStatus.CANCELED
    assert "Stopped on request (SIGTERM)" in text
    assert slot_holders(a) == [] and leases_of(a, run.run_id) == 0
    with a.state() as store:
        audit = store.audit_rows(run_id=run.run_id)
        assert {r["error_code"] for r in audit if r["outcome"] == "deferred"} == {"run_stopped"}
        assert store.runs(limit=1)[0]["status"] == "stopped"
    slow_down(a, 0.0)
    assert a.run("sync")[0] == 0
    assert_holds_exactly(a, range(1, 41))
    mark = len(a.sandbox.request_log)
    assert a.run("sync")[0] == 0 and a.requests(mark) == []


def test_ctrl_c_while_waiting_for_the_slot(make_sync):
    a = make_sync()
    a.add_people(person(i) for i in range(1, 31))
    a.add_memberships([(i, "vip") for i in range(25, 31)])
    slow_down(a, 0.3)
    holder, _ = a.spawn("sync", log="holder")
    wait_until("A to send", lambda: len(a.writes()) >= 2)
    waiter, out = a.spawn("sync", "--groups", "vip", log="waiter")
    wait_until("B to wait", lambda: "Waiting for the erzycall_api pool" in out.read_text())
    text = _stopped(a, waiter, out, sig=signal.SIGINT)
    assert "Stopped on request (Ctrl-C (SIGINT))" in text
    run_b = sync_runs(a)[-1]
    assert run_status(a, run_b.run_id) == dg.DagsterRunStatus.CANCELED
    with a.instance() as instance:
        pending = instance.event_log_storage.get_concurrency_info(POOL).pending_steps
        assert run_b.run_id not in {p.run_id for p in pending}
    slow_down(a, 0.0)
    assert holder.wait(120) == 0
    assert_holds_exactly(a, range(1, 31))


def test_sigterm_while_extracting(make_sync):
    a = make_sync()
    a.add_people(person(i) for i in range(1, 20_001))
    (a.root / "contacts.sql").write_text(SLOW_CONTACTS_SQL)  # rows trickle in (~1 ms each)
    proc, out = a.spawn("sync")
    wait_until("the run to start", lambda: len(sync_runs(a)) == 1, timeout=60)
    time.sleep(2)
    text = _stopped(a, proc, out)
    assert "read " not in text, "extraction finished before the stop: make it slower"
    (run,) = sync_runs(a)
    assert run_status(a, run.run_id) == dg.DagsterRunStatus.CANCELED
    assert a.requests() == []
