"""Runs whose process is gone: found, marked failed, and what they held given back.

A run killed with SIGKILL (OOM, reboot, ``kill -9``) cannot say it stopped: Dagster keeps it
"started", its ``erzycall_api`` pool slot stays claimed and the contact it was sending stays
leased. Every run records its process in its tags (see ``process.py``), so the next run on the
same host — the CLI before it launches, a sync waiting for the slot or a lease, and run
monitoring through :mod:`erzy_pipelines.orchestration.launcher` — can tell it is dead and clean up.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

from erzy_pipelines.orchestration.process import ProcessIdentity, is_alive

IN_PROGRESS = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)


def process_gone(run: dg.DagsterRun) -> bool:
    """True when the run is in progress but its recorded process no longer exists."""
    identity = ProcessIdentity.from_tags(run.tags)
    return run.status in IN_PROGRESS and identity is not None and is_alive(identity) is False


def why_done(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Why ``run_id`` no longer needs what it holds, or None if it may still be working.

    A run this instance does not know (another Dagster instance sharing the state database) is
    taken to be working: its leases expire on their own.
    """
    run = instance.get_run_by_id(run_id)
    if run is None:
        return None
    if run.is_finished:
        return f"run {run_id} has ended ({run.status.value.lower()})"
    if process_gone(run):
        return f"run {run_id} is dead: its process ({ProcessIdentity.from_tags(run.tags)}) is gone"
    return None


def mark_dead(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """End a run whose process is gone (failed, or canceled if a cancel was under way) and free
    its pool slots. Returns what was done, for the log."""
    identity = ProcessIdentity.from_tags(run.tags)
    message = (
        f"The process of this run ({identity}) is gone (killed, out of memory or the machine "
        "restarted); marked by erzy-pipelines so that later runs can go on."
    )
    if run.status == DagsterRunStatus.CANCELING:
        instance.report_run_canceled(run, message)
    else:
        instance.report_run_failed(run, message)
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return f"run {run.run_id} ({run.job_name}): {message}"


def free_if_done(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Free what ``run_id`` holds in the pool if it has ended or died; says why, or None."""
    run = instance.get_run_by_id(run_id)
    if run is not None and process_gone(run):
        return mark_dead(instance, run)
    reason = why_done(instance, run_id)
    if reason is not None:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return reason


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark every in-progress run whose process is gone; returns one line per run marked."""
    runs = instance.get_runs(filters=RunsFilter(statuses=list(IN_PROGRESS)))
    return [mark_dead(instance, run) for run in runs if process_gone(run)]
