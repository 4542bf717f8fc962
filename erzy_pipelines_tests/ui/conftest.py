"""`erzy-pipelines dev` (webserver, daemon, sandbox, sample CRM) and headless Chromium.

Chromium is Debian's package (`make test` and `.ci/run` install it when missing), driven by
Playwright for Python without Playwright's own browser download. Without Chromium the UI tests
skip on a developer machine and fail under CI=true.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from erzy_pipelines_tests.conftest import IN_CI

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = os.environ.get("ERZY_SCREENSHOT_DIR")  # set to refresh the README's pictures


def wait_until_up(
    proc: subprocess.Popen, url: str, log: Path, instance: Any, partitions: list[str]
) -> None:
    """Until the webserver answers and each sensor has run (its partitions hold ``vip``)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                pass
            with instance() as opened:
                if all("vip" in opened.get_dynamic_partitions(p) for p in partitions):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("the dev server did not come up\n" + log.read_text()[-3000:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    """One `erzy-pipelines dev` for the module: one DAGSTER_HOME, as a user keeps it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workdir = root / "work"
        self.workdir.mkdir(parents=True)
        self.data = self.workdir / "data"
        self.port, self.sandbox_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.log = root / "dev.log"
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("ERZY", "CRM_", "DAGSTER_HOME"))
        }
        self.env = {**env, "ERZY_DATA_DIR": str(self.data), "PYTHONUNBUFFERED": "1"}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "erzy_pipelines.cli", "dev", "--port", str(self.port),
                 "--sandbox-port", str(self.sandbox_port)],
                cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its whole tree can be ended, whatever hangs
            )
        self._wait_until_up()

    @property
    def home(self) -> Path:
        return self.data / "dagster_home"

    def _wait_until_up(self) -> None:
        wait_until_up(self.proc, self.url, self.log, self.instance, ["crm_groups"])

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    # -- the sandbox the dev server started -------------------------------------------------
    def sandbox(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.sandbox_url}/_sandbox{path}", data=data, method="POST" if data else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def writes(self) -> int:
        return self.sandbox("/stats")["writes"]

    def remote_phones(self) -> set[str]:
        return {c["phone"] for c in self.sandbox("/contacts")["data"]}

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The CLI on the dev server's settings (its env, DAGSTER_HOME, sandbox and CRM)."""
        from erzy_pipelines.sandbox import DEMO_API_KEY

        env = {
            **self.env,
            "DAGSTER_HOME": str(self.home),
            "ERZYCALL_BASE_URL": f"{self.sandbox_url}/api/v1",
            "ERZYCALL_API_KEY": DEMO_API_KEY,
            "ERZYCALL_RATE_LIMITS": "3000/60,100000/3600",
            "ERZY_STATE_DATABASE_URL": f"sqlite:///{self.data / 'demo_state.sqlite'}",
        }
        return subprocess.run(
            [sys.executable, "-m", "erzy_pipelines.cli", *args], cwd=self.workdir, env=env,
            capture_output=True, text=True, timeout=timeout,
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(60)
        with contextlib.suppress(ProcessLookupError):  # no webserver or daemon left behind
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("dev"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(message + " (CI=true: UI tests must run)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, dev: DevServer, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # Dagster's "join the community" notice would cover the page whenever it decides to show.
    context.add_init_script("window.localStorage.setItem('communityNux', 'true')")
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        page.screenshot(path=str(tmp_path / "last-page.png"))  # what a failure looked like
        context.close()


def screenshot(page: Any, name: str, tmp: Path) -> Path:
    """Save a screenshot (into ERZY_SCREENSHOT_DIR too when set, for the README)."""
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path))
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOTS) / f"{name}.png")
    return path
