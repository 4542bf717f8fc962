"""The daily schedule and the crm_groups sensor, evaluated the way the daemon evaluates them."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from erzy_pipelines.core.scope import FULL_SCOPE, SyncScope, scope_from_partition_keys
from erzy_pipelines.orchestration.definitions import build_definitions
from erzy_pipelines.orchestration.partitions import (
    CRM_GROUPS_PARTITIONS_NAME,
    UNGROUPED_KEY,
    desired_partition_keys,
    partition_changes,
)
from erzy_pipelines.orchestration.resources import CrmDatabaseResource
from erzy_pipelines_tests.orchestration.conftest import SyncHarness, people_groups, person

TICK = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def harness(harness_factory, sqlite_url, tmp_path) -> SyncHarness:
    """The harness on a persistent instance made from the repository's dagster.yaml (schedule
    and sensor contexts need one, as the daemon has)."""
    h = harness_factory(sqlite_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    h.instance.dispose()
    h.instance = dg.DagsterInstance.from_config(str(home))
    return h


def _partitions(h: SyncHarness) -> list[str]:
    return h.instance.get_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME)


def _evaluate_schedule(h: SyncHarness, defs: dg.Definitions) -> dg.RunRequest:
    schedule = defs.resolve_schedule_def("daily_erzycall_sync")
    context = dg.build_schedule_context(instance=h.instance, scheduled_execution_time=TICK)
    data = schedule.evaluate_tick(context)
    assert data.skip_message is None
    [request] = data.run_requests
    return request


def _keys_in_range(h: SyncHarness, request: dg.RunRequest) -> list[str]:
    """The partitions the request's range spans, in the instance's partition order."""
    keys = _partitions(h)
    span = request.partition_key_range
    assert span is not None
    return keys[keys.index(span.start) : keys.index(span.end) + 1]


def _crm_resource(h: SyncHarness) -> CrmDatabaseResource:
    return CrmDatabaseResource(
        url=h.crm_url,
        contacts_sql_path=str(h.tmp_path / "contacts.sql"),
        memberships_sql_path=str(h.tmp_path / "memberships.sql"),
    )


def _tick_sensor(h: SyncHarness, defs: dg.Definitions):
    """One sensor evaluation; its partition requests are applied as the daemon would."""
    sensor = defs.resolve_sensor_def("crm_groups_sensor")
    context = dg.build_sensor_context(instance=h.instance, resources={"crm": _crm_resource(h)})
    result = sensor.evaluate_tick(context)
    if result.dynamic_partitions_requests:
        for req in result.dynamic_partitions_requests:
            if isinstance(req, dg.AddDynamicPartitionsRequest):
                h.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            else:
                for key in req.partition_keys:
                    h.instance.delete_dynamic_partition(req.partitions_def_name, key)
    return result


def _execute(
    h: SyncHarness, defs: dg.Definitions, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """Run the schedule's request as the daemon launches it: the job, its tags, its config."""
    job = defs.resolve_job_def("erzycall_sync")
    return job.execute_in_process(
        instance=h.instance, tags=request.tags, run_config=request.run_config or None
    )


def test_daily_schedule_runs_every_group_and_the_ungrouped_in_one_run(harness):
    """On a fresh instance (the sensor never ran) the schedule still asks for one run over the
    whole range (just `_ungrouped`), and that run syncs all 6 contacts, grouped or not: 6 POSTs.
    Once the sensor has made the group partitions, the request's range covers all 4 of them and
    the run (with 1 changed contact) costs 1 PATCH."""
    h = harness
    h.add_people(person(i) for i in range(1, 7))
    h.add_memberships([(1, "vip"), (2, "vip"), (2, "newsletter"), (3, "trial")])  # 4-6 ungrouped
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("daily_erzycall_sync")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"

    request = _evaluate_schedule(h, defs)
    assert request.run_key == TICK.isoformat()
    assert _keys_in_range(h, request) == _partitions(h) == [UNGROUPED_KEY]
    result = _execute(h, defs, request)
    assert result.success
    assert len(h.remote_by_phone()) == 6
    run = h.state().last_run()
    assert run["partition_key"] == FULL_SCOPE.label and run["created"] == 6
    assert run["run_id"] == result.run_id

    _tick_sensor(h, defs)
    h.update_person(5, full_name="Five, Ungrouped")
    request = _evaluate_schedule(h, defs)
    assert _keys_in_range(h, request) == _partitions(h)
    assert sorted(_partitions(h)) == sorted([UNGROUPED_KEY, "newsletter", "trial", "vip"])
    mark = len(h.sandbox.request_log)
    result = _execute(h, defs, request)
    assert result.success
    writes = h.sandbox.request_log[mark:]
    assert [w.method for w in writes] == ["PATCH"]
    assert h.remote_by_phone()["+14155551005"]["title"] == "Five, Ungrouped"
    materialized = {
        e.partition
        for e in result.all_events
        if e.is_step_materialization and e.asset_key == dg.AssetKey("erzycall_contacts")
    }
    assert materialized == set(_partitions(h)), "every group shows this sync in the UI"


def test_sensor_adds_and_deletes_partitions_as_crm_groups_come_and_go(harness):
    h = harness
    defs = build_definitions()
    h.add_people(person(i) for i in range(1, 4))
    h.add_memberships([(1, "vip"), (2, "newsletter"), (3, "bad...key")])

    result = _tick_sensor(h, defs)
    [add] = result.dynamic_partitions_requests
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert list(add.partition_keys) == [UNGROUPED_KEY, "newsletter", "vip"]  # "bad...key" skipped
    assert _partitions(h) == [UNGROUPED_KEY, "newsletter", "vip"]

    with h.engine.begin() as conn:
        conn.execute(people_groups.delete().where(people_groups.c.group_key == "newsletter"))
    h.add_memberships([(2, "trial")])
    result = _tick_sensor(h, defs)
    kinds = {type(r).__name__: list(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert kinds == {
        "AddDynamicPartitionsRequest": ["trial"],
        "DeleteDynamicPartitionsRequest": ["newsletter"],
    }
    assert sorted(_partitions(h)) == [UNGROUPED_KEY, "trial", "vip"]

    assert "already match" in _tick_sensor(h, defs).skip_message


@pytest.mark.parametrize(
    ("selected", "expected"),
    [
        ([], FULL_SCOPE),
        (["_ungrouped", "a", "b"], FULL_SCOPE),
        (["a"], SyncScope(frozenset({"a"}), include_ungrouped=False)),
        (["a", "_ungrouped"], SyncScope(frozenset({"a"}), include_ungrouped=True)),
    ],
)
def test_scope_from_partition_keys(selected, expected):
    assert scope_from_partition_keys(selected, ["_ungrouped", "a", "b"]) == expected


def test_desired_partitions_and_changes():
    assert desired_partition_keys(["b", "a", "a", "_ungrouped", "x\ny", ""]) == [
        UNGROUPED_KEY,
        "a",
        "b",
    ]
    assert partition_changes(["_ungrouped", "a", "c"], ["_ungrouped", "a", "b"]) == (["c"], ["b"])
