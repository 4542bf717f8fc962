"""The example project's two YAML syncs in the Dagster UI, started with `dg dev` as the README
says: both syncs' assets, jobs and schedules are there, and a group launched from one sync's
asset page is written to that sync's ErzyCall only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from erzy_pipelines.cli import INSTANCE_TEMPLATE
from erzy_pipelines.crm.seed import seed_demo_crm
from erzy_pipelines.sandbox import SandboxConfig, SandboxServer
from erzy_pipelines.sandbox.config import KeySpec
from erzy_pipelines_tests.ui.conftest import _free_port, screenshot, wait_until_up
from erzy_pipelines_tests.ui.test_dagster_ui import open_page, pick_partitions, wait_for

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]
PROJECT = Path(__file__).resolve().parents[2] / "examples" / "two_syncs"
KEYS = {"sales": "ek_test_ui_sales_0001", "support": "ek_test_ui_support_0002"}


class TwoSyncs:
    """`dg dev` in the example project, two sandboxes, two sample CRMs, one DAGSTER_HOME."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = root / "dagster_home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text(INSTANCE_TEMPLATE.read_text())
        self.boxes = {
            name: SandboxServer(SandboxConfig(limits=((3000, 60.0),), keys={key: KeySpec()}))
            .start()
            for name, key in KEYS.items()
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ERZY", "CRM_"))}
        env.update(
            DAGSTER_HOME=str(self.home),
            ERZY_STATE_DATABASE_URL=f"sqlite:///{root / 'state.sqlite'}",
            PYTHONPATH=os.pathsep.join([str(PROJECT / "src"), env.get("PYTHONPATH", "")]),
        )
        for seed, (name, box) in enumerate(self.boxes.items(), start=21):
            crm = f"sqlite:///{root / f'{name}_crm.sqlite'}"
            seed_demo_crm(crm, rows=80, seed=seed)
            upper = name.upper()
            env[f"{upper}_CRM_URL"] = crm
            env[f"{upper}_ERZYCALL_KEY"] = KEYS[name]
            env[f"{upper}_ERZYCALL_BASE_URL"] = box.base_url
        self.log = root / "dg-dev.log"
        dg_cli = Path(sys.executable).parent / "dg"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(dg_cli), "dev", "--port", str(self.port)],
                cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_up()

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def _wait_until_up(self) -> None:
        partitions = [f"{name}_crm_groups" for name in KEYS]
        wait_until_up(self.proc, self.url, self.log, self.instance, partitions)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        for box in self.boxes.values():
            box.stop()


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoSyncs]:
    server = TwoSyncs(tmp_path_factory.mktemp("two_syncs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    context.add_init_script("window.localStorage.setItem('communityNux', 'true')")
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        page.screenshot(path=str(tmp_path / "last-page.png"))
        context.close()


def test_both_syncs_show_their_own_assets_jobs_and_schedules(two: TwoSyncs, page: Any, tmp_path):
    open_page(page, f"{two.url}/assets")
    text = page.inner_text("body")
    assert "sales" in text and "support" in text, text[:2000]
    screenshot(page, "two-syncs-assets", tmp_path)

    open_page(page, f"{two.url}/automation")
    text = page.inner_text("body")
    for name in (
        "sales_daily_erzycall_sync", "sales_weekly_erzycall_reconcile",
        "support_daily_erzycall_sync", "support_weekly_erzycall_reconcile",
        "sales_crm_groups_sensor", "support_crm_groups_sensor",
    ):
        assert name in text, name
    screenshot(page, "two-syncs-automation", tmp_path)


def test_a_group_launched_from_one_sync_writes_to_its_own_erzycall_only(
    two: TwoSyncs, page: Any, tmp_path
):
    sales, support = two.boxes["sales"], two.boxes["support"]
    assert sales.contacts() == [] and support.contacts() == []
    open_page(page, f"{two.url}/assets/sales/erzycall_contacts")
    page.get_by_role("button", name="Materialize…").click()
    page.get_by_role("button", name="Confirm").click()  # the other four come along
    pick_partitions(page, ["vip"])
    page.get_by_role("button", name="Launch 1 run").click()  # one partition: one run

    def finished() -> bool:
        with two.instance() as instance:
            runs = instance.get_runs(limit=1)
            return bool(runs) and runs[0].is_finished

    wait_for("the run to finish", finished)
    with two.instance() as instance:
        (run,) = instance.get_runs(limit=1)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == "vip"
        done = instance.get_materialized_partitions(dg.AssetKey(["sales", "erzycall_contacts"]))
        assert done == {"vip"}
        assert not instance.get_materialized_partitions(
            dg.AssetKey(["support", "erzycall_contacts"])
        )
    assert sales.contacts() and support.contacts() == []  # only the sales organization
    open_page(page, f"{two.url}/assets/sales/erzycall_contacts?view=partitions&partition=vip")
    assert "created" in page.inner_text("body")
    screenshot(page, "two-syncs-sales-vip", tmp_path)
