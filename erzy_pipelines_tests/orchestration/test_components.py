"""Syncs declared in YAML (the example project's two components) or built by the factory,
side by side in one code location: real sandboxes over HTTP, real CRMs, one state database
and one Dagster instance for all, as a deployment keeps them."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import dagster as dg
import pydantic
import pytest

from erzy_pipelines.crm.extract import (
    create_crm_engine,
    discover_group_keys,
    iter_contact_chunks,
    read_sql_file,
)
from erzy_pipelines.crm.seed import seed_demo_crm
from erzy_pipelines.orchestration.factory import SyncConfig, build_sync
from erzy_pipelines.orchestration.names import SyncNames
from erzy_pipelines.orchestration.partitions import sync_partitions
from erzy_pipelines.orchestration.schedules import full_sync_run_request
from erzy_pipelines.sandbox import SandboxConfig, SandboxServer
from erzy_pipelines.sandbox.config import KeySpec
from erzy_pipelines.settings import SQL_DIR
from erzy_pipelines.sync.stop import StopSignal
from erzy_pipelines_tests.reference import prepare

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two_syncs" / "src" / "two_syncs"
SALES_KEY, SUPPORT_KEY = "ek_test_sales_key_0001", "ek_test_support_key_0002"


def _sandbox(key: str, limits: tuple[tuple[int, float], ...]) -> SandboxServer:
    return SandboxServer(SandboxConfig(limits=limits, keys={key: KeySpec()})).start()


def expected_phones(crm_url: str) -> set[str]:
    """What a from-scratch run makes of the CRM: the phones ErzyCall must hold."""
    engine = create_crm_engine(crm_url)
    contacts = read_sql_file(SQL_DIR / "contacts.sql")
    memberships = read_sql_file(SQL_DIR / "memberships.sql")
    rows = [r for chunk in iter_contact_chunks(engine, contacts, memberships) for r in chunk]
    engine.dispose()
    return {c.phone for c in prepare(rows, "US", StopSignal()).contacts}


def run_full(
    defs: dg.Definitions, instance: dg.DagsterInstance, names: SyncNames, crm_url: str,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """What the daily schedule launches: one run over every group of the sync."""
    engine = create_crm_engine(crm_url)
    keys = discover_group_keys(engine, read_sql_file(SQL_DIR / "memberships.sql"))
    engine.dispose()
    sync_partitions(instance, keys, names)
    request = full_sync_run_request(instance, None, names)
    job = defs.resolve_job_def(names.sync_job)
    return job.execute_in_process(
        instance=instance, tags=request.tags, run_config=run_config or request.run_config
    )


def run_requests(instance: dg.DagsterInstance, run_id: str, asset: dg.AssetKey) -> int:
    records = instance.get_records_for_run(run_id).records
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if (
            event is not None
            and event.event_type_value == "ASSET_OBSERVATION"
            and event.asset_key == asset
            and event.partition is None
        ):
            return int(event.event_specific_data.asset_observation.metadata["requests_spent"].value)
    raise AssertionError(f"no run observation of {asset.to_user_string()}")


@pytest.fixture
def two_crms(tmp_path: Path) -> tuple[str, str]:
    sales = f"sqlite:///{tmp_path / 'sales_crm.sqlite'}"
    support = f"sqlite:///{tmp_path / 'support_crm.sqlite'}"
    seed_demo_crm(sales, rows=40, seed=11)
    seed_demo_crm(support, rows=25, seed=12)  # within the support key's 30 a minute
    return sales, support


def test_two_yaml_syncs_in_one_code_location_each_fill_only_their_own_sandbox(
    two_crms, tmp_path, monkeypatch
):
    sales_crm, support_crm = two_crms
    sales_box = _sandbox(SALES_KEY, ((60, 60.0), (1000, 3600.0)))
    support_box = _sandbox(SUPPORT_KEY, ((30, 60.0), (500, 3600.0)))  # the YAML's plan
    try:
        for name, value in {
            "SALES_CRM_URL": sales_crm,
            "SALES_ERZYCALL_KEY": SALES_KEY,
            "SALES_ERZYCALL_BASE_URL": sales_box.base_url,
            "SUPPORT_CRM_URL": support_crm,
            "SUPPORT_ERZYCALL_KEY": SUPPORT_KEY,
            "SUPPORT_ERZYCALL_BASE_URL": support_box.base_url,
            "ERZY_STATE_DATABASE_URL": f"sqlite:///{tmp_path / 'state.sqlite'}",
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.syspath_prepend(str(EXAMPLE.parent))  # as `pip install -e` would
        defs = dg.load_from_defs_folder(path_within_project=EXAMPLE)
        assert defs.resources["sales_erzycall"].rate_limits == "60/60,1000/3600"
        assert defs.resources["support_erzycall"].rate_limits == "30/60,500/3600"
        instance = dg.DagsterInstance.ephemeral()
        sales, support = SyncNames("sales"), SyncNames("support")

        assert run_full(defs, instance, sales, sales_crm).success
        assert run_full(defs, instance, support, support_crm).success

        for box, crm in ((sales_box, sales_crm), (support_box, support_crm)):
            held = [c["phone"] for c in box.contacts()]
            assert len(held) == len(set(held))
            assert set(held) == expected_phones(crm)  # exactly its CRM's contacts
            assert 429 not in box.stats()["by_status"]  # each key kept to its own plan
        assert set(c["phone"] for c in sales_box.contacts()).isdisjoint(
            c["phone"] for c in support_box.contacts()
        )

        # Each sync's assets, partitions and audit are its own; a rerun costs nothing.
        second = run_full(defs, instance, sales, sales_crm)
        assert run_requests(instance, second.run_id, sales.key("erzycall_contacts")) == 0
        second = run_full(defs, instance, support, support_crm)
        assert run_requests(instance, second.run_id, support.key("erzycall_contacts")) == 0
        assert instance.get_dynamic_partitions("sales_crm_groups")
        assert instance.get_dynamic_partitions("support_crm_groups")
        assert not instance.get_dynamic_partitions("crm_groups")
    finally:
        sales_box.stop()
        support_box.stop()


def test_two_syncs_with_one_key_and_overlapping_crm_ids_keep_their_state_apart(
    two_crms, tmp_path, monkeypatch, sandbox
):
    """Both CRMs number their people 1, 2, 3…: without a namespace each sync would take the
    other's records for its own (and their contacts for gone)."""
    sales_crm, support_crm = two_crms
    assert expected_phones(sales_crm).isdisjoint(expected_phones(support_crm))
    from erzy_pipelines.sandbox import DEMO_API_KEY

    monkeypatch.setenv("SALES_CRM_URL", sales_crm)
    monkeypatch.setenv("SUPPORT_CRM_URL", support_crm)
    monkeypatch.setenv("ONE_KEY", DEMO_API_KEY)
    monkeypatch.setenv("ERZY_STATE_DATABASE_URL", f"sqlite:///{tmp_path / 'state.sqlite'}")
    common = dict(api_key_env="ONE_KEY", base_url=sandbox.base_url, rate_limits="10000/60")
    defs = dg.Definitions.merge(
        build_sync(SyncConfig(name="sales", crm_url_env="SALES_CRM_URL", **common)),
        build_sync(SyncConfig(name="support", crm_url_env="SUPPORT_CRM_URL", **common)),
    )
    instance = dg.DagsterInstance.ephemeral()
    sales, support = SyncNames("sales"), SyncNames("support")
    assert run_full(defs, instance, sales, sales_crm).success
    assert run_full(defs, instance, support, support_crm).success
    held = {c["phone"] for c in sandbox.contacts()}
    assert held == expected_phones(sales_crm) | expected_phones(support_crm)
    for names, crm in ((sales, sales_crm), (support, support_crm)):
        again = run_full(defs, instance, names, crm)
        assert run_requests(instance, again.run_id, names.key("erzycall_contacts")) == 0
    assert {c["phone"] for c in sandbox.contacts()} == held  # nothing deleted or doubled


def _project(tmp_path: Path, attributes: str) -> Path:
    """A dg project holding one component with these YAML attributes."""
    module = f"proj_{uuid.uuid4().hex[:8]}"  # modules are cached by name: one per project
    root = tmp_path / module
    package = root / "src" / module
    (package / "defs" / "crm").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "{module}"\nversion = "0"\n\n[tool.dg]\n'
        f'directory_type = "project"\n\n[tool.dg.project]\nroot_module = "{module}"\n'
    )
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "defs" / "crm" / "defs.yaml").write_text(
        "type: erzy_pipelines.ErzyCallContactSync\nattributes:\n"
        + textwrap.indent(textwrap.dedent(attributes).strip(), "  ")
        + "\n"
    )
    return package


GOOD = """
name: crm
crm: {url_env: CRM_URL, contacts_sql: c.sql, memberships_sql: m.sql}
erzycall: {api_key_env: KEY}
"""


@pytest.mark.parametrize(
    ("bad", "field", "allowed"),
    [
        ("name: Sales Team", "name", "lower-case letters"),
        ("erzycall: {api_key_env: KEY, rate_limits: lots}", "rate_limits", "requests/seconds"),
        ("schedule: {cron: every day}", "cron", "cron expression"),
        ("reconcile: {deleted_in_erzycall: forget}", "deleted_in_erzycall", "recreate"),
        ("crm: {url_env: 'postgresql://u:pw@db/crm', contacts_sql: c.sql, memberships_sql: m.sql}",
         "url_env", "environment variable name"),
        ("erzycall: {api_key: ek_live_secret}", "api_key", "api_key_env"),
        ("erzycall: {api_key_env: KEY, base_url: 'ftp://x/api'}", "erzycall.base_url", "https"),
        ("erzycall: {api_key_env: KEY, base_url: 'http://example.com/api'}",
         "erzycall.base_url", "allow_insecure_http=true"),
        ("erzycall: {api_key_env: KEY, timeout_seconds: 0}", "timeout_seconds", "greater than 0"),
        ("policy: {default_region: XX}", "policy.default_region", "region"),
        ("policy: {max_requests_per_run: -5}", "max_requests_per_run", "greater than or equal"),
        ("policy: {reject_rate_warn: 7}", "reject_rate_warn", "less than or equal to 1"),
        ("policy: {ownership: mine}", "ownership", "merge"),
        ("policy: {lease_seconds: 10}", "policy.lease_seconds", "at least twice"),
        ("removal: {max_share: 3}", "max_share", "less than or equal to 1"),
        ("removal: {max_per_run: -1}", "max_per_run", "greater than or equal"),
        ("reconcile: {cron: '* * *'}", "cron", "cron expression"),
        ("state: {url_env: 'sqlite:///x.db'}", "url_env", "environment variable name"),
    ],
)
def test_a_yaml_mistake_names_the_file_the_field_and_what_is_allowed(
    tmp_path, monkeypatch, bad, field, allowed
):
    key = bad.split(":", 1)[0]
    lines = [line for line in GOOD.strip().splitlines() if not line.startswith(f"{key}:")]
    project = _project(tmp_path, "\n".join([*lines, bad]))
    monkeypatch.syspath_prepend(str(project.parent))
    with pytest.raises(Exception) as caught:
        dg.load_from_defs_folder(path_within_project=project)
    message = str(caught.value)
    for cause in _causes(caught.value):
        message += "\n" + str(cause)
    assert "defs.yaml" in message
    assert field in message
    assert allowed in message
    # Our validators never repeat a value (Dagster's own report quotes the YAML line itself).
    for cause in _causes(caught.value):
        if isinstance(cause, pydantic.ValidationError) and not cause.title.endswith("Model"):
            assert "u:pw@" not in str(cause)


def _causes(exc: BaseException) -> list[BaseException]:
    found = []
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        found.append(exc)
    return found


def test_a_good_yaml_sync_lists_its_prefixed_definitions(tmp_path, monkeypatch):
    project = _project(tmp_path, GOOD)
    monkeypatch.syspath_prepend(str(project.parent))
    defs = dg.load_from_defs_folder(path_within_project=project)
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {"crm_erzycall_sync", "crm_erzycall_plan"}
    schedules = {s.name: s for s in repo.schedule_defs}
    assert set(schedules) == {"crm_daily_erzycall_sync", "crm_weekly_erzycall_reconcile"}
    reconcile = schedules["crm_weekly_erzycall_reconcile"]
    assert reconcile.cron_schedule == "0 3 * * 0"
    assert reconcile.execution_timezone == "UTC"
    assert reconcile.default_status == dg.DefaultScheduleStatus.RUNNING
    assert {s.name for s in repo.sensor_defs} == {"crm_crm_groups_sensor"}
    assert sorted(defs.resources) == ["crm_crm", "crm_erzycall", "crm_policy", "crm_state"]
    # secrets are variable names, never values
    assert defs.resources["crm_erzycall"].api_key == dg.EnvVar("KEY")
