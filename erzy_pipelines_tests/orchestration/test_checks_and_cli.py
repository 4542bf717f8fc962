"""Asset checks, the audit's accounting (invariant 4), the CLI and the definitions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from erzy_pipelines import cli
from erzy_pipelines.core.dedupe import duplicate_phones
from erzy_pipelines.core.normalize import Contact
from erzy_pipelines.crm.seed import seed_demo_crm
from erzy_pipelines.settings import SQL_DIR
from erzy_pipelines.sync import prepare as incremental
from erzy_pipelines_tests.orchestration.conftest import people_groups, person


def _check_results(
    instance: dg.DagsterInstance, run_id: str
) -> dict[str, tuple[bool, dg.AssetCheckSeverity, bool]]:
    """check name → (passed, severity, blocking) as the run recorded them."""
    out = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = record.dagster_event.event_specific_data
        out[evaluation.check_name] = (
            evaluation.passed,
            evaluation.severity,
            bool(evaluation.blocking),
        )
    return out


WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


def test_every_crm_row_ends_in_exactly_one_outcome(harness_factory, sqlite_url, monkeypatch):
    """Invariant 4 on the messy sample CRM: created, merged or rejected — each CRM id once."""
    seed_demo_crm(sqlite_url, rows=300, seed=7)
    h = harness_factory(sqlite_url)
    monkeypatch.setenv("CRM_CONTACTS_SQL", str(SQL_DIR / "contacts.sql"))
    monkeypatch.setenv("CRM_MEMBERSHIPS_SQL", str(SQL_DIR / "memberships.sql"))
    code, summaries = h.sync()
    assert code == 0, summaries
    audit = h.state().audit_rows()
    survivors = [r["crm_ids"].split(",")[0] for r in audit if r["action"] in ("create", "update")]
    merged = [r["crm_ids"] for r in audit if r["outcome"] == "merged"]
    rejected = [r["crm_ids"] for r in audit if r["outcome"] == "rejected"]
    accounted = survivors + merged + rejected
    assert len(accounted) == len(set(accounted)) == 300
    assert merged and rejected, "the sample CRM is meant to contain duplicates and bad rows"
    run = h.state().runs(limit=1)[0]
    assert run["created"] + run["merged"] + run["rejected"] == 300
    assert len(h.remote_by_phone()) == run["created"]


def test_duplicate_phones_finds_what_the_blocking_check_blocks():
    a = Contact(
        phone="+14155551001",
        title="A",
        email=None,
        notes=None,
        tags=(),
        group_ids=(),
        group_keys=(),
        custom_fields=(),
        crm_ids=("1",),
        updated_at=None,
        warnings=(),
    )
    assert duplicate_phones([a]) == []
    assert duplicate_phones([a, a]) == ["+14155551001"]


def test_blocking_check_stops_the_upsert_when_dedupe_is_broken(harness, monkeypatch):
    harness.add_people([person(1), person(2)])

    def broken_dedupe(contacts):
        return list(contacts) * 2, [], []

    monkeypatch.setattr(incremental, "dedupe", broken_dedupe)
    code, summaries = harness.sync()
    assert code == 1
    assert harness.requests_since_sync() == [], "a request was sent past the blocking check"
    run_id = harness.instance.get_runs(limit=1)[0].run_id
    checks = _check_results(harness.instance, run_id)
    assert checks["no_duplicate_phones"] == (False, ERROR, True)
    materialized = {k.to_user_string() for k in _materialized_keys(harness.instance, run_id)}
    assert "deduped_contacts" in materialized and "erzycall_contacts" not in materialized


def _materialized_keys(instance: dg.DagsterInstance, run_id: str) -> set[dg.AssetKey]:
    return {
        record.dagster_event.asset_key
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    }


def test_reject_rate_and_failed_operation_checks_warn(harness, monkeypatch):
    monkeypatch.setenv("ERZY_REJECT_RATE_WARN", "0.1")
    harness.add_people([person(1), person(2, phone="nonsense")])
    # a CRM group mapped to an ErzyCall group that does not exist: the API answers 400
    harness.add_people([person(3)])
    with harness.engine.begin() as conn:
        conn.execute(
            people_groups.insert(),
            [{"person_id": 3, "group_key": "ghost", "erzy_group": "grp_ghost"}],
        )
    code, summaries = harness.sync()
    assert code == 1, "failed operations must make the CLI exit non-zero"
    assert summaries[0]["failed"] == 1 and summaries[0]["rejected"] == 1
    run_id = harness.instance.get_runs(limit=1)[0].run_id
    checks = _check_results(harness.instance, run_id)
    # The two warnings fail without blocking anything; the blocking check passes.
    assert checks == {
        "reject_rate_below_threshold": (False, WARN, False),
        "no_failed_operations": (False, WARN, False),
        "no_duplicate_phones": (True, ERROR, True),
        "deletions_within_guards": (True, ERROR, False),  # removal is off: nothing to guard
    }
    failed = [r for r in harness.state().audit_rows(run_id=run_id) if r["outcome"] == "failed"]
    assert failed[0]["http_status"] == 400 and failed[0]["error_code"] == "VALIDATION_ERROR"

    # the API said no to that exact payload: not sent again until the contact changes
    code, summaries = harness.sync()
    assert harness.writes_since_sync() == []
    assert summaries[0]["rejected"] == 2 and summaries[0]["failed"] == 0
    harness.update_person(3, full_name="Changed")
    harness.sync()
    assert len(harness.writes_since_sync()) == 1


def test_cli_sync_dry_run_prints_the_plan(harness, capsys, monkeypatch):
    harness.add_people(person(i) for i in range(1, 6))
    # cli.main uses DAGSTER_HOME; the harness env already points everything else at the sandbox
    monkeypatch.setenv("DAGSTER_HOME", str(harness.tmp_path / "dagster_home"))
    assert cli.main(["sync", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "DRY RUN: nothing was sent. The plan needs 5 requests" in out
    assert harness.sandbox.request_log == []


def test_definitions_load():
    from erzy_pipelines.orchestration.definitions import defs

    dg.Definitions.validate_loadable(defs)
    names = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert names == {
        "crm_contacts",
        "normalized_contacts",
        "deduped_contacts",
        "erzycall_contacts",
        "sync_audit",
    }


@pytest.mark.timeout(600)  # two demo runs of up to 240 s each
def test_demo_command_runs_twice_and_second_run_sends_nothing(tmp_path: Path):
    """The README's main command, in a fresh folder: seeds, starts the sandbox, syncs."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("ERZY", "CRM_", "DAGSTER_HOME"))
    }
    env["ERZY_DATA_DIR"] = str(tmp_path / "data")
    command = [sys.executable, "-m", "erzy_pipelines.cli", "demo"]
    first = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert first.returncode == 0, first.stderr[-3000:]
    second = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert second.returncode == 0, second.stderr[-3000:]
    header, row = [
        line.split()
        for line in first.stdout.splitlines()
        if line.strip().startswith(("scope", "all"))
    ]
    first_counts = dict(zip(header, row, strict=True))
    header, row = [
        line.split()
        for line in second.stdout.splitlines()
        if line.strip().startswith(("scope", "all"))
    ]
    second_counts = dict(zip(header, row, strict=True))
    assert int(first_counts["created"]) > 800
    assert (
        second_counts["requests"] == "0" and second_counts["unchanged"] == first_counts["created"]
    )
    # The demo keeps its own state database, never the one a real sync would use.
    written = sorted(p.name for p in (tmp_path / "data").glob("*.sqlite"))
    assert written == ["demo_crm.sqlite", "demo_sandbox.sqlite", "demo_state.sqlite"], written
    assert "at the real limits" in first.stdout


def test_cli_misconfiguration_exits_2_with_what_to_fix(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ERZY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRM_DATABASE_URL", "postgresql+psycopg://crm:s3cret-pw@127.0.0.1:1/crm")
    assert cli.main(["sync"]) == 2
    err = capsys.readouterr().err
    assert "CRM_DATABASE_URL" in err and "s3cret-pw" not in err and "***" in err

    monkeypatch.setenv("ERZY_MAX_RUN_SECONDS", "soon")
    assert cli.main(["sync"]) == 2
    assert "ERZY_MAX_RUN_SECONDS='soon' is not a number" in capsys.readouterr().err


def test_every_asset_reports_row_count_and_column_schema(harness):
    harness.add_people([person(1), person(2, phone="nonsense"), person(3, phone="+1 415 555 1001")])
    assert harness.sync()[0] == 0
    from erzy_pipelines.orchestration.definitions import defs

    for key in defs.resolve_asset_graph().get_all_asset_keys():
        assert defs.resolve_assets_def(key).descriptions_by_key[key], key
        event = harness.instance.get_latest_materialization_event(key)
        metadata = event.asset_materialization.metadata
        assert "dagster/row_count" in metadata and "dagster/column_schema" in metadata, key
    counts = {
        key.to_user_string(): harness.instance.get_latest_materialization_event(key)
        .asset_materialization.metadata["dagster/row_count"]
        .value
        for key in defs.resolve_asset_graph().get_all_asset_keys()
    }
    # 3 CRM rows: 1 rejected, 2 sharing a phone → 1 contact, 1 POST; audit: create, reject, merge
    assert counts == {
        "crm_contacts": 3,
        "normalized_contacts": 3,
        "deduped_contacts": 1,
        "erzycall_contacts": 1,
        "sync_audit": 3,
    }


def test_config_command_hides_key_and_database_passwords(monkeypatch, capsys):
    monkeypatch.setenv("ERZYCALL_API_KEY", "ek_live_0123456789abcdef")
    monkeypatch.setenv("CRM_DATABASE_URL", "postgresql+psycopg://reader:S3cretPw@crm/crm")
    monkeypatch.setenv("ERZY_STATE_DATABASE_URL", "mysql+pymysql://sync:0therPw@db/state")
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    assert "S3cretPw" not in out and "0therPw" not in out and "0123456789abcdef" not in out
    assert "reader:***@crm" in out and "ek_live_" in out


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://reader:S3cretPw@crm-db:notaport/crm",  # SQLAlchemy cannot parse it
        "postgresql+psycopg://reader:S3c@retPw@crm-db/crm",  # an unescaped @ in the password
    ],
)
def test_a_crm_url_that_cannot_be_parsed_never_shows_its_password(monkeypatch, capsys, tmp_path,
                                                                  url):
    monkeypatch.setenv("CRM_DATABASE_URL", url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ERZY_DATA_DIR", str(tmp_path / "data"))
    assert cli.main(["config"]) == 0
    assert cli.main(["sync"]) == 2
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "S3c" not in text and "retPw" not in text, text
    assert "reader:***@" in printed.out and "CRM_DATABASE_URL" in printed.err
