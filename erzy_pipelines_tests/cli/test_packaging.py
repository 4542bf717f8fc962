"""Installed from a wheel, away from any checkout, the package brings its instance settings:
the CLI and `erzy-pipelines dev` give DAGSTER_HOME the pools, run retries and run monitoring."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from erzy_pipelines_tests.cli.conftest import Sync, person

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built as a wheel from a copy of the sources, installed into a folder."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "erzy_pipelines", src / "erzy_pipelines",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
                    str(src)], check=True, cwd=src)
    (wheel,) = (root / "dist").glob("erzy_pipelines-*.whl")
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    return site


def _env(world: Sync, site: Path) -> dict[str, str]:
    env = world.env()
    env.pop("DAGSTER_HOME")  # the CLI's default: data/dagster_home in the working folder
    env["PYTHONPATH"] = str(site)
    return env


def _template(site: Path) -> str:
    return (site / "erzy_pipelines" / "dagster.yaml").read_text()


def test_the_package_comes_from_the_wheel_not_the_checkout(make_sync, wheel_site):
    world = make_sync()
    found = subprocess.run(
        [sys.executable, "-c", "import erzy_pipelines; print(erzy_pipelines.__file__)"],
        env=_env(world, wheel_site), cwd=world.workdir, capture_output=True, text=True,
        check=True,
    ).stdout
    assert found.startswith(str(wheel_site)), found


def test_a_wheel_installed_sync_applies_the_packaged_instance_settings(make_sync, wheel_site):
    world = make_sync()
    world.add_people(person(i) for i in range(1, 4))
    done = subprocess.run(
        [sys.executable, "-m", "erzy_pipelines.cli", "sync"],
        env=_env(world, wheel_site), cwd=world.workdir, capture_output=True, text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(world.writes()) == 3
    home = world.workdir / "data" / "dagster_home"
    assert (home / "dagster.yaml").read_text() == _template(wheel_site)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 30
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        assert type(instance.run_launcher).__name__ == "LocalProcessRunLauncher"


def test_an_older_managed_dagster_yaml_is_brought_up_to_date_and_a_users_own_is_kept(
    make_sync, wheel_site
):
    world = make_sync()
    world.add_people([person(1)])
    home = world.workdir / "data" / "dagster_home"
    home.mkdir(parents=True)
    old = (REPO / "erzy_pipelines_tests" / "data" / "dagster.v0.yaml").read_text()
    (home / "dagster.yaml").write_text(old)
    run = [sys.executable, "-m", "erzy_pipelines.cli", "sync"]
    env = _env(world, wheel_site)
    assert subprocess.run(run, env=env, cwd=world.workdir, capture_output=True).returncode == 0
    assert (home / "dagster.yaml").read_text() == _template(wheel_site)

    mine = "# my own settings\ntelemetry:\n  enabled: false\n"
    (home / "dagster.yaml").write_text(mine)
    assert subprocess.run(run, env=env, cwd=world.workdir, capture_output=True).returncode == 0
    assert (home / "dagster.yaml").read_text() == mine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dev_from_a_wheel_uses_the_packaged_settings_and_starts_quietly(make_sync, wheel_site):
    world = make_sync()
    port, sandbox_port = _free_port(), _free_port()
    env = _env(world, wheel_site)
    env["ERZY_DATA_DIR"] = str(world.workdir / "data")
    for name in ("CRM_DATABASE_URL", "CRM_CONTACTS_SQL", "CRM_MEMBERSHIPS_SQL",
                 "ERZY_STATE_DATABASE_URL", "ERZYCALL_BASE_URL"):
        env.pop(name)  # the demo defaults: sample CRM, local sandbox
    log = world.root / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "erzy_pipelines.cli", "dev", "--port", str(port),
             "--sandbox-port", str(sandbox_port)],
            env=env, cwd=world.workdir, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        home = world.workdir / "data" / "dagster_home"
        assert (home / "dagster.yaml").read_text() == _template(wheel_site)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)  # a stop that hangs fails the test
        finally:  # no webserver or daemon left behind to slow the tests after this one
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "will not be used" not in text and "SupersessionWarning" not in text, text[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the daemon ran on this home
        assert "vip" in instance.get_dynamic_partitions("crm_groups")
