"""Dagster's default run launcher, plus the one thing run monitoring needs from it.

``DefaultRunLauncher`` starts each run worker as a local process but cannot tell run monitoring
whether that process is still alive, so a run worker killed with SIGKILL stays "started"
forever. This launcher answers from the process each run records in its tags (host, pid, start
time; see ``process.py``): gone → the daemon marks the run failed (and ``run_retries`` may retry
it), and ``free_slots_after_run_end_seconds`` gives its pool slot back. Runs on another host, or
that have not recorded a process yet, are reported as running: monitoring's other timeouts
still apply to them.

Enabled in the package's dagster.yaml::

    run_launcher:
      module: erzy_pipelines.runtime.launcher
      class: LocalProcessRunLauncher
"""

from __future__ import annotations

from dagster import DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

from erzy_pipelines.orchestration.process import ProcessIdentity, is_alive


class LocalProcessRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` with ``check_run_worker_health`` for run monitoring."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        identity = ProcessIdentity.from_tags(run.tags)
        if identity is not None and is_alive(identity) is False:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"the run's process ({identity}) is gone"
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING)
