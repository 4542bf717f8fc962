"""What the Dagster UI shows: each group's partition describes that group, the run's totals are
recorded once, a dry run materializes nothing, metadata is typed, runs are named after the job."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from erzy_pipelines.orchestration.assets.events import SYNC_KEYS
from erzy_pipelines.orchestration.definitions import build_definitions
from erzy_pipelines.orchestration.partitions import CRM_GROUPS_PARTITIONS_NAME, UNGROUPED_KEY
from erzy_pipelines_tests.orchestration.conftest import SyncHarness, people, person


def _events(
    instance: dg.DagsterInstance, run_id: str, kind: dg.DagsterEventType
) -> list[Any]:
    out = []
    for record in instance.all_logs(run_id, of_type=kind):
        data = record.dagster_event.event_specific_data
        out.append(
            data.materialization if kind == dg.DagsterEventType.ASSET_MATERIALIZATION
            else data.asset_observation
        )
    return out


def _by_partition(events: list[Any], asset: str) -> dict[str | None, dict[str, Any]]:
    return {
        e.partition: {k: v.value for k, v in e.metadata.items()}
        for e in events
        if e.asset_key.path == [asset]
    }


@pytest.fixture
def groups(harness: SyncHarness) -> SyncHarness:
    """vip: 1, 2; newsletter: 1, 3, 4; no group: 5, 6 and a bad phone (7)."""
    harness.add_people([*(person(i) for i in range(1, 7)), person(7, phone="nope")])
    harness.add_memberships([(1, "vip"), (2, "vip"), (1, "newsletter"), (3, "newsletter"),
                             (4, "newsletter")])
    return harness


def test_each_group_partition_describes_its_own_group(groups: SyncHarness):
    h = groups
    assert h.sync()[0] == 0
    run_id = h.last_run_id()
    done = _events(h.instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
    contacts = _by_partition(done, "erzycall_contacts")
    assert set(contacts) == {"vip", "newsletter", UNGROUPED_KEY}
    figures = {p: (m["contacts"], m["created"], m["requests"]) for p, m in contacts.items()}
    assert figures == {"vip": (2, 2, 2), "newsletter": (3, 3, 3), UNGROUPED_KEY: (2, 2, 2)}
    crm = _by_partition(done, "crm_contacts")
    assert {p: m["dagster/row_count"] for p, m in crm.items()} == {
        "vip": 2, "newsletter": 3, UNGROUPED_KEY: 3
    }
    normalized = _by_partition(done, "normalized_contacts")
    assert normalized[UNGROUPED_KEY]["rejected"] == 1 and normalized["vip"]["rejected"] == 0
    # Each (asset, partition) is materialized exactly once per run.
    assert len(done) == len(SYNC_KEYS) * 3
    totals = h.run_totals(run_id)  # once per run, not per partition
    assert (totals["requests_spent"], totals["contacts"], totals["created"]) == (6, 6, 6)
    assert totals["scope"] == "all"

    h.update_person(3, full_name="Three, renamed")
    assert h.sync()[0] == 0
    contacts = _by_partition(
        _events(h.instance, h.last_run_id(), dg.DagsterEventType.ASSET_MATERIALIZATION),
        "erzycall_contacts",
    )
    assert (contacts["newsletter"]["changed"], contacts["newsletter"]["updated"]) == (1, 1)
    assert contacts["newsletter"]["requests"] == 1 and contacts["newsletter"]["unchanged"] == 2
    assert (contacts["vip"]["changed"], contacts["vip"]["requests"]) == (0, 0)
    assert contacts["vip"]["unchanged"] == 2


def test_a_dry_run_observes_its_plan_and_materializes_nothing(groups: SyncHarness):
    h = groups
    assert h.sync()[0] == 0
    real_run = h.last_run_id()
    h.add_people([person(8)])
    h.add_memberships([(8, "vip"), (8, "trial")])
    h.update_person(2, email="two@example.org")

    assert h.sync(["vip"], dry_run=True)[0] == 0
    plan_run = h.instance.get_runs(limit=1)[0]
    assert plan_run.job_name == "erzycall_plan"
    assert h.requests_since_sync() == []
    assert _events(h.instance, plan_run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION) == []
    seen = _events(h.instance, plan_run.run_id, dg.DagsterEventType.ASSET_OBSERVATION)
    assert _by_partition(seen, "erzycall_contacts")["vip"]["requests_needed"] == 2
    assert h.run_totals(plan_run.run_id)["requests_spent"] == 0
    for key in SYNC_KEYS:  # the latest materialization is still the real run's
        event = h.instance.get_latest_materialization_event(dg.AssetKey(key))
        assert event.run_id == real_run, key
    trial = h.instance.get_materialized_partitions(dg.AssetKey("erzycall_contacts"))
    assert "trial" not in trial, "a dry run turned a partition green"


def test_metadata_is_typed_plottable_and_described(groups: SyncHarness):
    h = groups
    assert h.sync()[0] == 0
    run_id = h.last_run_id()
    for event in _events(h.instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION):
        for name, value in event.metadata.items():
            if name.endswith("_seconds") or name in ("contacts", "requests", "created"):
                assert isinstance(value, dg.FloatMetadataValue | dg.IntMetadataValue), name
    totals = h.run_totals(run_id)
    for name in ("eta_seconds", "backlog_eta_seconds", "duration_seconds"):
        assert isinstance(totals[name], float), name
    for name in ("requests_needed", "requests_allowed", "request_cap", "created", "failed"):
        assert isinstance(totals[name], int), name

    defs = build_definitions()
    for key in SYNC_KEYS:
        spec = defs.resolve_assets_def(key).specs_by_key[dg.AssetKey(key)]
        schema = spec.metadata["dagster/column_schema"]
        assert all(c.description for c in schema.columns), key
    audit = defs.resolve_assets_def("sync_audit").specs_by_key[dg.AssetKey("sync_audit")]
    types = {c.name: c.type for c in audit.metadata["dagster/column_schema"].columns}
    assert types["http_status"] == types["attempts"] == "int"
    assert types["created_at"] == "datetime"
    for check in defs.resolve_assets_def("erzycall_contacts").check_specs:
        assert check.description, check.name


def test_a_group_the_crm_does_not_have_fails_at_once_naming_the_known_groups(groups):
    h = groups
    assert h.sync()[0] == 0
    h.instance.add_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME, ["ghost"])  # "Add partition"
    job = build_definitions().resolve_job_def("erzycall_sync")
    mark = len(h.sandbox.request_log)
    result = job.execute_in_process(instance=h.instance, partition_key="ghost",
                                    raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "'ghost'" in message and "newsletter, vip" in message and "_ungrouped" in message
    assert h.sandbox.request_log[mark:] == []


def test_a_subset_of_the_sync_assets_is_refused_at_once(groups):
    """The chain is one step: materializing only erzycall_contacts cannot reuse older data."""
    h = groups
    job = build_definitions().resolve_implicit_global_asset_job_def()
    with pytest.raises(dg.DagsterInvalidSubsetError, match="does not support subsetting"):
        job.execute_in_process(
            instance=h.instance,
            partition_key=UNGROUPED_KEY,
            asset_selection=[dg.AssetKey("erzycall_contacts")],
        )
    assert h.sandbox.request_log == []


def test_cli_runs_are_runs_of_the_sync_job(groups):
    h = groups
    assert h.sync()[0] == 0 and h.sync(["vip"])[0] == 0
    assert {r.job_name for r in h.instance.get_runs()} == {"erzycall_sync"}


def test_a_run_that_cannot_finish_sending_leaves_its_partitions_failed_with_its_figures(groups):
    """The key is revoked: what was read is materialized; the ErzyCall side of the partitions
    is observed (what was tried, failed and deferred) but not marked materialized."""
    from erzy_pipelines.sandbox import DEMO_API_KEY

    h = groups
    h.sandbox.revoke_key(DEMO_API_KEY)
    code, _ = h.sync()
    assert code == 1
    run_id = h.last_run_id()
    done = _events(h.instance, run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert {e.asset_key.path[0] for e in done} == {
        "crm_contacts", "normalized_contacts", "deduped_contacts"
    }
    seen = _by_partition(
        _events(h.instance, run_id, dg.DagsterEventType.ASSET_OBSERVATION), "erzycall_contacts"
    )
    assert seen["vip"]["failed"] + seen["vip"]["deferred"] == 2 and seen["vip"]["created"] == 0
    assert h.instance.get_materialized_partitions(dg.AssetKey("erzycall_contacts")) == set()
    assert h.instance.get_runs(limit=1)[0].status == dg.DagsterRunStatus.FAILURE


def test_a_run_of_every_registered_partition_is_a_group_run_while_a_crm_group_is_missing(
    harness, monkeypatch
):
    """The sensor has registered only 'vip' (the CRM grew a 'trial' group since its last tick):
    a run of partition vip is a run of vip, not of the whole CRM — so removal stays off and a
    trial-only contact is neither sent nor deleted."""
    from erzy_pipelines.orchestration.partitions import (
        scope_from_partition_keys,
        whole_only_if_complete,
    )

    h = harness
    monkeypatch.setenv("ERZY_DELETE_REMOVED", "true")
    monkeypatch.setenv("ERZY_MAX_DELETION_SHARE", "0.5")  # a full run would delete person 3
    h.add_people([person(1), person(2), person(3)])
    h.add_memberships([(1, "vip"), (2, "trial")])
    assert h.sync()[0] == 0  # all three exist now, created by the sync
    h.remove_membership(2, "trial")
    with h.engine.begin() as conn:
        conn.execute(people.delete().where(people.c.id == 3))  # would be removed by a full run
    for key in h.instance.get_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME):
        h.instance.delete_dynamic_partition(CRM_GROUPS_PARTITIONS_NAME, key)
    h.instance.add_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME, ["vip"])
    h.add_memberships([(2, "trial")])
    assert scope_from_partition_keys(["vip"], ["vip"]).groups is None  # all registered...
    scope = whole_only_if_complete(scope_from_partition_keys(["vip"], ["vip"]), ["vip"],
                                   ["vip", "trial"], asked_whole=False)
    assert scope.groups == {"vip"} and not scope.include_ungrouped  # ...yet not the whole CRM
    job = build_definitions().resolve_job_def("erzycall_sync")
    mark = len(h.sandbox.request_log)
    result = job.execute_in_process(instance=h.instance, partition_key="vip")
    assert result.success
    assert [r.method for r in h.sandbox.request_log[mark:]] == []  # no DELETE of person 3
    with h.state() as store:
        (run,) = [r for r in store.runs(limit=5) if r["run_id"] == result.run_id]
    assert run["partition_key"] == "vip"
