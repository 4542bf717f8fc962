"""Dagster instance configuration: the local dagster.yaml and the PostgreSQL production variant.

Both are loaded the way a deployment loads them (a DAGSTER_HOME folder holding the file) and a
real sync runs on them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml

from erzy_pipelines.orchestration.partitions import CRM_GROUPS_PARTITIONS_NAME, UNGROUPED_KEY
from erzy_pipelines_tests.orchestration.conftest import SyncHarness, person

REPO = Path(__file__).resolve().parents[2]
SYNC_ASSETS = {
    "crm_contacts",
    "normalized_contacts",
    "deduped_contacts",
    "erzycall_contacts",
    "sync_audit",
}


def _home(tmp_path: Path, source: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(source, home / "dagster.yaml")
    return home


def _use_instance(h: SyncHarness, instance: dg.DagsterInstance) -> None:
    h.instance.dispose()
    h.instance = instance  # the harness disposes it at the end


def test_dagster_yaml_loads_and_its_pool_limits_the_upsert_step(harness, tmp_path):
    instance = dg.DagsterInstance.from_config(str(_home(tmp_path, REPO / "dagster.yaml")))
    _use_instance(harness, instance)
    config = instance.get_concurrency_config()
    assert config.pool_config.default_pool_limit == 1
    assert config.run_queue_config.max_concurrent_runs == 4
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
    assert not instance.run_retries_retry_on_asset_or_op_failure

    harness.add_people(person(i) for i in range(1, 4))
    code, summaries = harness.sync()
    assert code == 0 and summaries[0]["created"] == 3
    # The upsert step took a slot of pool "erzycall_api", whose limit came from default_limit.
    info = instance.event_log_storage.get_concurrency_info("erzycall_api")
    assert info.slot_count == 1
    assert info.active_slot_count == 0, "the slot was not given back after the run"


def test_definitions_validate():
    from erzy_pipelines.orchestration.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_schedule_def("daily_erzycall_sync").cron_schedule == "0 2 * * *"
    sensor = defs.resolve_sensor_def("crm_groups_sensor")
    assert (sensor.name, sensor.minimum_interval_seconds) == ("crm_groups_sensor", 300)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    partitions = defs.resolve_job_def("erzycall_sync").partitions_def
    assert isinstance(partitions, dg.DynamicPartitionsDefinition)
    assert partitions.name == CRM_GROUPS_PARTITIONS_NAME


def test_postgres_variant_keeps_the_local_concurrency_and_retries():
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    production = yaml.safe_load((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    assert "storage" not in local and set(production["storage"]) == {"postgres"}
    for section in ("concurrency", "run_retries", "telemetry"):
        assert production[section] == local[section], section


def test_sync_runs_with_dagster_storage_on_postgresql(harness, pg_url, tmp_path, monkeypatch):
    """deploy/dagster.postgres.yaml in a DAGSTER_HOME, its DAGSTER_PG_* variables pointing at a
    fresh PostgreSQL database: the sync runs, and its run, partitions and materializations are
    stored in that database."""
    url = sa.engine.make_url(pg_url)
    for name, value in {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": url.database,
    }.items():
        monkeypatch.setenv(name, value)
    home = _home(tmp_path, REPO / "deploy" / "dagster.postgres.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    _use_instance(harness, instance)
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1

    harness.add_people(person(i) for i in range(1, 5))
    harness.add_memberships([(1, "vip"), (2, "trial")])
    code, summaries = harness.sync()
    assert code == 0 and summaries[0]["created"] == 4
    code, summaries = harness.sync(["vip"])
    assert code == 0 and summaries[0]["unchanged"] == 1

    run_ids = [r["run_id"] for r in harness.state().runs()]
    assert {r.run_id for r in instance.get_runs()} == set(run_ids)
    assert all(r.is_success for r in instance.get_runs())
    event = instance.get_latest_materialization_event(dg.AssetKey("erzycall_contacts"))
    assert event is not None and event.run_id == run_ids[0]
    assert instance.get_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME) == [
        UNGROUPED_KEY,
        "trial",
        "vip",
    ]
    # Read the tables themselves: it is PostgreSQL that holds them, not a file in DAGSTER_HOME.
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            stored_runs = set(conn.execute(sa.text("SELECT run_id FROM runs")).scalars())
            materialized = set(
                conn.execute(
                    sa.text(
                        "SELECT asset_key FROM event_logs "
                        "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
                    )
                ).scalars()
            )
    finally:
        engine.dispose()
    assert stored_runs == set(run_ids)
    assert {dg.AssetKey.from_db_string(k).to_user_string() for k in materialized} == SYNC_ASSETS
    assert not list(home.glob("**/*.db")), "a SQLite storage file was created in DAGSTER_HOME"
