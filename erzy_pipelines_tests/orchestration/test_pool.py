"""The erzycall_api slot on a real Dagster instance (a DAGSTER_HOME with the package's
dagster.yaml): one holder at a time, waiting without a busy loop, dead holders freed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from erzy_pipelines.orchestration.pool import POOL, PoolSlot
from erzy_pipelines.orchestration.process import ProcessIdentity, process_started
from erzy_pipelines.sync.stop import StopSignal, SyncStopped

TEMPLATE = Path(__file__).resolve().parents[2] / "erzy_pipelines" / "dagster.yaml"


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(TEMPLATE, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def _run(instance: dg.DagsterInstance, tags: dict[str, str]) -> dg.DagsterRun:
    """A started run of some job, with the given tags (its process identity)."""
    run = instance.create_run_for_job(
        dg.GraphDefinition(name="holder", node_defs=[]).to_job(), tags=tags
    )
    instance.handle_run_event(run.run_id, _start_event(run))
    return instance.get_run_by_id(run.run_id)


def _start_event(run: dg.DagsterRun):
    from dagster._core.events import DagsterEvent, DagsterEventType

    return DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name)


def test_a_second_claimer_waits_says_so_once_and_gets_the_slot_when_freed(instance):
    holder = _run(instance, ProcessIdentity.current().tags())  # alive: this very process
    waiter = _run(instance, {})
    lines: list[str] = []
    first = PoolSlot(instance, holder.run_id, "step", stop=StopSignal(), log=lines.append)
    second = PoolSlot(instance, waiter.run_id, "step", stop=StopSignal(), log=lines.append)
    entered = threading.Event()

    def wait_for_it() -> None:
        with second.held():
            entered.set()

    with first.held():
        thread = threading.Thread(target=wait_for_it)
        thread.start()
        time.sleep(5)
        assert not entered.is_set()
        info = instance.event_log_storage.get_concurrency_info(POOL)
        assert [s.run_id for s in info.claimed_slots] == [holder.run_id]
    thread.join(10)
    assert entered.is_set()
    waits = [line for line in lines if line.startswith("Waiting")]
    assert len(waits) == 1 and holder.run_id in waits[0] and "since" in waits[0]
    assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []


def test_a_holder_whose_process_is_gone_is_marked_failed_and_its_slot_freed(instance):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tags = {**ProcessIdentity.current().tags(), "erzy/pid": str(proc.pid),
            "erzy/process_started": process_started(proc.pid)}
    dead = _run(instance, tags)
    held_by_dead = PoolSlot(instance, dead.run_id, "step", stop=StopSignal(), log=print).held()
    held_by_dead.__enter__()  # and never left: the process "dies" holding it
    proc.kill()
    proc.wait()
    lines: list[str] = []
    me = _run(instance, {})
    started = time.monotonic()
    with PoolSlot(instance, me.run_id, "step", stop=StopSignal(), log=lines.append).held():
        assert time.monotonic() - started < 5
        assert any(f"Freed the erzycall_api slot held by run {dead.run_id}" in x for x in lines)
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE


def test_a_stop_while_waiting_leaves_no_claim_behind(instance):
    holder = _run(instance, ProcessIdentity.current().tags())
    waiter = _run(instance, {})
    stop = StopSignal()
    with PoolSlot(instance, holder.run_id, "step", stop=StopSignal(), log=print).held():
        threading.Timer(1.0, stop.request, args=("test",)).start()
        with pytest.raises(SyncStopped), PoolSlot(
            instance, waiter.run_id, "step", stop=stop, log=print
        ).held():
            pass
        info = instance.event_log_storage.get_concurrency_info(POOL)
        assert waiter.run_id not in {p.run_id for p in info.pending_steps}


def test_without_a_pool_limit_nobody_waits(tmp_path):
    home = tmp_path / "plain"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        a, b = _run(instance, {}), _run(instance, {})
        first = PoolSlot(instance, a.run_id, "s", stop=StopSignal(), log=print)
        second = PoolSlot(instance, b.run_id, "s", stop=StopSignal(), log=print)
        with first.held(), second.held():
            assert instance.event_log_storage.get_concurrency_info(POOL).claimed_slots == []
