"""The README's UI instructions, followed in a real browser against `erzy-pipelines dev`.

One dev server (one DAGSTER_HOME, one sandbox, the sample CRM) serves the whole module, in the
order a new user goes: backfill two groups from the asset page, dry-run a group from the
launchpad, read the run logs, backfill from the job's Partitions tab, then a run launched from
the UI is killed mid-upsert and the syncs after it must not be blocked.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from erzy_pipelines.core.scope import SyncScope
from erzy_pipelines.crm.extract import create_crm_engine, iter_contact_chunks, load_memberships
from erzy_pipelines.orchestration.process import ProcessIdentity
from erzy_pipelines.sandbox import DEMO_API_KEY
from erzy_pipelines.settings import SQL_DIR
from erzy_pipelines.sync.stop import StopSignal
from erzy_pipelines_tests.reference import extract, prepare
from erzy_pipelines_tests.ui.conftest import DevServer, screenshot

# One dev server for the module, in order (`make test` distributes tests by module).
pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]
E164 = re.compile(r"\+\d{8,15}")


def expected_phones(dev: DevServer, groups: set[str] | None) -> set[str]:
    """The contacts a sync of ``groups`` (None: everyone) sends on a fresh state: every record
    of those groups, normalized and merged by phone (the sample CRM read with its own SQL)."""
    engine = create_crm_engine(f"sqlite:///{dev.data / 'demo_crm.sqlite'}")
    memberships = load_memberships(engine, (SQL_DIR / "memberships.sql").read_text())
    contacts_sql = (SQL_DIR / "contacts.sql").read_text()
    rows = extract(
        memberships=memberships,
        contact_chunks=lambda check: iter_contact_chunks(
            engine, contacts_sql, None, memberships=memberships, between_fetches=check
        ),
        scope=SyncScope(groups=None if groups is None else frozenset(groups),
                        include_ungrouped=groups is None),
        last_sent_with=lambda ids: set(),
        region="US",
        stop=StopSignal(),
    )
    return {c.phone for c in prepare(rows, "US", StopSignal()).contacts}


def wait_for(what: str, condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def dismiss_popups(page: Any) -> None:
    """Dagster's first-visit notices cover the page; close them if they show."""
    for label in ("Skip", "Dismiss", "Got it"):
        button = page.get_by_text(label, exact=True)
        if button.count() and button.first.is_visible():
            button.first.click()


def open_page(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(1500)
    dismiss_popups(page)


def pick_partitions(page: Any, keys: list[str]) -> None:
    """In the launch dialog: Custom → open the partition list → tick each key."""
    page.get_by_text("Select a partition or create one").click()
    for key in keys:
        # A row reads "<key><key>" (a label and a truncation helper): match it whole.
        exactly = re.compile(rf"^\s*{re.escape(key)}\s*({re.escape(key)})?\s*$")
        page.get_by_role("menuitem").filter(has_text=exactly).click()
    page.keyboard.press("Escape")


def backfills_done(dev: DevServer, backfill_id: str) -> bool:
    with dev.instance() as instance:
        backfill = instance.get_backfill(backfill_id)
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        finished = backfill.status.value in ("COMPLETED", "COMPLETED_SUCCESS", "FAILED",
                                             "COMPLETED_FAILED", "CANCELED")
        return bool(runs) and finished and all(r.is_finished for r in runs)


def newest_backfill(dev: DevServer) -> Any:
    with dev.instance() as instance:
        return instance.get_backfills(limit=1)[0]


def test_backfill_of_two_groups_from_the_asset_page(dev: DevServer, page: Any, tmp_path: Path):
    want = expected_phones(dev, {"trial", "vip"})
    assert dev.remote_phones() == set() and dev.writes() == 0
    open_page(page, f"{dev.url}/assets/erzycall_contacts")
    page.get_by_role("button", name="Materialize…").click()
    page.get_by_role("button", name="Confirm").click()  # the other four come along
    pick_partitions(page, ["trial", "vip"])
    screenshot(page, "backfill-dialog", tmp_path)
    page.get_by_role("button", name="Launch backfill").click()
    wait_for("the backfill to be recorded", lambda: _has_backfill(dev))
    backfill = newest_backfill(dev)
    wait_for("the backfill to finish", lambda: backfills_done(dev, backfill.backfill_id))

    with dev.instance() as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * len(runs)
        done = instance.get_materialized_partitions(dg.AssetKey("erzycall_contacts"))
        assert done == {"trial", "vip"}
    assert dev.remote_phones() == want
    assert dev.writes() == len(want), "each contact of trial ∪ vip costs exactly one write"

    open_page(page, f"{dev.url}/assets/erzycall_contacts?view=partitions")
    assert "Materialized (2)" in page.inner_text("body")
    open_page(page, f"{dev.url}/assets/erzycall_contacts?view=partitions&partition=vip")
    text = page.inner_text("body")
    assert "requests" in text and "contacts" in text and "created" in text, text[-2000:]
    screenshot(page, "asset-partitions", tmp_path)

    page.set_viewport_size({"width": 1900, "height": 750})
    open_page(page, f"{dev.url}/asset-groups/erzycall_sync/lineage")
    screenshot(page, "asset-graph", tmp_path)


def _has_backfill(dev: DevServer) -> bool:
    with dev.instance() as instance:
        return bool(instance.get_backfills(limit=1))


def test_dry_run_from_the_launchpad_sends_nothing_and_turns_nothing_green(
    dev: DevServer, page: Any, tmp_path: Path
):
    writes, phones = dev.writes(), dev.remote_phones()
    with dev.instance() as instance:
        before = instance.get_materialized_partitions(dg.AssetKey("erzycall_contacts"))
    open_page(page, f"{dev.url}/locations/erzy_pipelines.definitions/jobs/erzycall_plan/playground")
    page.get_by_placeholder("Partition").click()
    page.keyboard.type("newsletter")
    page.wait_for_timeout(500)
    page.keyboard.press("Enter")
    page.wait_for_timeout(1500)
    screenshot(page, "dry-run-launchpad", tmp_path)
    page.get_by_role("button", name="Launch Run").click()

    def plan_done() -> bool:
        with dev.instance() as instance:
            runs = instance.get_runs(dg.RunsFilter(job_name="erzycall_plan"))
            return bool(runs) and runs[0].is_finished

    wait_for("the plan run", plan_done)
    with dev.instance() as instance:
        (run,) = instance.get_runs(dg.RunsFilter(job_name="erzycall_plan"))
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") == "newsletter"
        after = instance.get_materialized_partitions(dg.AssetKey("erzycall_contacts"))
    assert after == before and "newsletter" not in after
    assert dev.writes() == writes and dev.remote_phones() == phones


def test_run_logs_mask_phones_and_never_show_the_key(dev: DevServer, page: Any, tmp_path):
    with dev.instance() as instance:
        runs = [r for r in instance.get_runs() if r.job_name != "erzycall_plan"]
    assert runs, "no sync has run yet: this test reads the logs of the first test's backfill"
    open_page(page, f"{dev.url}/runs/{runs[0].run_id}")
    page.wait_for_timeout(3000)
    text = page.inner_text("body")
    assert "sync_contacts" in text and "progress:" in text, text[:2000]
    assert DEMO_API_KEY not in text
    full = [p for p in E164.findall(text) if p in dev.remote_phones()]
    assert full == [], f"phones shown unmasked in the run logs: {full[:3]}"
    screenshot(page, "run-logs", tmp_path)


def test_backfill_from_the_job_shows_on_its_partitions_tab(
    dev: DevServer, page: Any, tmp_path: Path
):
    want = expected_phones(dev, {"newsletter", "enterprise"})
    url = f"{dev.url}/locations/erzy_pipelines.definitions/jobs/erzycall_sync/partitions"
    open_page(page, url)
    page.get_by_role("button", name="Materialize…").click()
    pick_partitions(page, ["enterprise", "newsletter"])
    page.get_by_role("button", name="Launch backfill").click()
    wait_for("a job backfill", lambda: newest_backfill(dev).partition_set_origin is not None)
    backfill = newest_backfill(dev)
    wait_for("the job backfill to finish", lambda: backfills_done(dev, backfill.backfill_id))
    with dev.instance() as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
        assert {r.job_name for r in runs} == {"erzycall_sync"}
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert want <= dev.remote_phones()
    open_page(page, url)
    page.wait_for_timeout(2000)
    assert "No backfills" not in page.inner_text("body")
    assert backfill.backfill_id in page.content()
    screenshot(page, "job-partitions", tmp_path)


def test_a_ui_run_killed_mid_upsert_is_marked_failed_and_the_next_sync_is_not_blocked(
    dev: DevServer, page: Any, tmp_path: Path
):
    dev.sandbox("/faults", {"latency": 0.2})
    writes = dev.writes()
    open_page(page, f"{dev.url}/locations/erzy_pipelines.definitions/jobs/erzycall_sync/partitions")
    page.get_by_role("button", name="Materialize…").click()
    page.get_by_role("button", name="All", exact=True).click()
    page.get_by_role("button", name="Launch backfill").click()
    wait_for("the full run to send", lambda: dev.writes() >= writes + 10)
    with dev.instance() as instance:
        (victim,) = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTED]
    identity = ProcessIdentity.from_tags(victim.tags)
    assert identity is not None, "the run did not record its process"
    os.kill(identity.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    dev.sandbox("/faults", {"latency": 0.0})

    def victim_failed() -> bool:
        with dev.instance() as instance:
            return instance.get_run_by_id(victim.run_id).status == dg.DagsterRunStatus.FAILURE

    wait_for("run monitoring to mark the run failed", victim_failed, timeout=90)
    with dev.instance() as instance:
        retries = instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": victim.run_id}))
    if retries:  # run_retries relaunched it: the retry is the next sync
        wait_for("the retry", lambda: _finished(dev, retries[0].run_id))
        assert _status(dev, retries[0].run_id) == dg.DagsterRunStatus.SUCCESS
    done = dev.cli("sync")
    assert done.returncode == 0, done.stderr[-3000:]
    assert dev.remote_phones() == expected_phones(dev, None)
    assert time.monotonic() - killed_at < 180
    again = dev.cli("sync")
    assert again.returncode == 0 and _requests(again.stdout) == 0, again.stdout[-2000:]


def _finished(dev: DevServer, run_id: str) -> bool:
    with dev.instance() as instance:
        return instance.get_run_by_id(run_id).is_finished


def _status(dev: DevServer, run_id: str) -> dg.DagsterRunStatus:
    with dev.instance() as instance:
        return instance.get_run_by_id(run_id).status


def _requests(stdout: str) -> int:
    lines = [line.split() for line in stdout.splitlines() if line.strip()]
    header = next(i for i, words in enumerate(lines) if words[:2] == ["scope", "status"])
    return int(dict(zip(lines[header], lines[header + 1], strict=True))["requests"])
