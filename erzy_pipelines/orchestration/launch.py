"""``erzy-pipelines sync``: launch the sync (or plan) job in this process, one run for the whole
CRM or one per chosen group, and summarize each run from the state database's run log."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    MAX_RETRIES_TAG,
)

from erzy_pipelines.core.budget import format_duration, parse_rate_limits, seconds_for_requests
from erzy_pipelines.core.outcomes import RunStatus
from erzy_pipelines.crm.extract import (
    CrmConnectionError,
    create_crm_engine,
    discover_group_keys,
    read_sql_file,
)
from erzy_pipelines.orchestration.dead_runs import reap_dead_runs
from erzy_pipelines.orchestration.instance import ensure_dagster_home
from erzy_pipelines.orchestration.partitions import (
    CRM_GROUPS_PARTITIONS_NAME,
    WHOLE_CRM_TAGS,
    sync_partitions,
)
from erzy_pipelines.orchestration.preflight import Refused, preflight
from erzy_pipelines.orchestration.process import ProcessIdentity
from erzy_pipelines.settings import apply_env_defaults, env
from erzy_pipelines.state import RUN_COUNT_FIELDS, StateStore

SUMMARY_COLUMNS = tuple(f for f in RUN_COUNT_FIELDS if not f.startswith("drift_"))

DEFERRAL_REASONS = {
    "request_budget": "the run's request cap (ERZY_MAX_REQUESTS_PER_RUN or --max-requests)",
    "time_budget": "the run's time cap (ERZY_MAX_RUN_SECONDS)",
    "key_budget_spent": "the API key's request budget is spent",
    "claimed_by_another_run": "another run was sending them",
    "lease_lost": "another run took them over",
}


_FAILURE_PREFIX = "dagster._core.definitions.events.Failure: "


class LaunchRefused(Exception):
    """A misconfiguration found before any run starts; the message says what to fix."""


def run_sync(
    groups: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    full_resync: bool = False,
    max_requests: int = 0,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "INFO",
) -> tuple[int, list[dict]]:
    """Run the ``erzycall_sync`` job (``erzycall_plan`` on a dry run) for all groups (one run)
    or for each chosen group; return (exit code, one summary row per run).

    Exit code 1 when a run or an operation failed, 2 for a misconfiguration found before any
    run, 130 when a run was stopped (SIGTERM, Ctrl-C). Before launching, runs of this instance
    whose process is gone are marked failed and their pool slots freed, so a killed sync never
    blocks this one.
    """
    # Imported here: the module builds the environment sync when imported, which fills in every
    # unset variable's default; a caller (the demo) sets its own defaults before calling this.
    from erzy_pipelines.orchestration.definitions import build_definitions

    apply_env_defaults()
    if instance is None:
        ensure_dagster_home()
        instance = dg.DagsterInstance.get()
    defs = build_definitions()  # checks every setting before touching any database
    try:
        preflight()  # the key, the SQL files and their columns, the state database
        launches = _launches(instance, groups)
    except (LaunchRefused, Refused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, []
    for line in reap_dead_runs(instance):
        print(f"note: {line}", file=sys.stderr)
    job = defs.resolve_job_def("erzycall_plan" if dry_run else "erzycall_sync")
    run_config: dict = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if not dry_run:
        config = {"full_resync": full_resync, "max_requests": max_requests}
        run_config["ops"] = {"sync_contacts": {"config": config}}
    # The CLI's own process is the run's process; a killed CLI run is not retried behind the
    # user's back (they rerun it), only runs the daemon launched are.
    cli_tags = {**ProcessIdentity.current().tags(), MAX_RETRIES_TAG: "0"}
    store = StateStore(env("ERZY_STATE_DATABASE_URL"))
    summaries, exit_code = [], 0
    for launch in launches:
        result = job.execute_in_process(
            instance=instance,
            run_config=run_config,
            raise_on_error=False,
            partition_key=launch.get("partition_key"),
            tags={**cli_tags, **launch.get("tags", {})},
        )
        row, stopped = _summary_row(instance, store, result, launch)
        summaries.append(row)
        if not result.success or row["failed"]:
            exit_code = 1
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data:
                    print(f"error: {_error_text(event.step_failure_data.error)}", file=sys.stderr)
        if stopped:
            print(f"stopped: run {result.run_id} was canceled", file=sys.stderr)
            return 130, summaries
    return exit_code, summaries


def _launches(instance: dg.DagsterInstance, groups: Sequence[str] | None) -> list[dict[str, Any]]:
    """The runs to launch: one over the whole CRM, or one per chosen group. The CRM's groups
    are read first (and the partitions made to match), so an unknown group is refused."""
    try:
        crm_keys = discover_group_keys(
            create_crm_engine(env("CRM_DATABASE_URL")),
            read_sql_file(Path(env("CRM_MEMBERSHIPS_SQL"))),
        )
    except (CrmConnectionError, OSError, ValueError) as exc:
        raise LaunchRefused(f"{exc} (check CRM_DATABASE_URL and CRM_MEMBERSHIPS_SQL)") from None
    sync_partitions(instance, crm_keys)
    known = instance.get_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME)
    if groups:
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise LaunchRefused(f"unknown group(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return [{"partition_key": g} for g in groups]
    range_tags = {
        ASSET_PARTITION_RANGE_START_TAG: known[0],
        ASSET_PARTITION_RANGE_END_TAG: known[-1],
        **WHOLE_CRM_TAGS,
    }
    return [{"tags": range_tags}]


def _summary_row(
    instance: dg.DagsterInstance,
    store: StateStore,
    result: dg.ExecuteInProcessResult,
    launch: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """One run's summary row (its counts from the run log) and whether it was stopped."""
    run = _run_row(store, result.run_id)
    status = instance.get_run_by_id(result.run_id).status  # type: ignore[union-attr]
    stopped = status == dg.DagsterRunStatus.CANCELED
    row = {
        "scope": launch.get("partition_key", "all"),
        "status": "ok" if result.success else ("STOPPED" if stopped else "FAILED"),
    }
    row.update({c: (run or {}).get(c) or 0 for c in SUMMARY_COLUMNS})
    if result.success and row["deferred"]:
        row["status"] = RunStatus.DEFERRED.value
        print(f"note: {_deferral_note(store, result.run_id, row['deferred'])}", file=sys.stderr)
    return row, stopped


def _deferral_note(store: StateStore, run_id: str, deferred: int) -> str:
    """What a run that finished without error left for the next run, and why."""
    try:
        reasons = store.deferral_reasons(run_id)
    except Exception:  # the counts are said already; the reasons are a courtesy
        reasons = {}
    why = "; ".join(
        f"{n} for {DEFERRAL_REASONS.get(code, code)}" for code, n in sorted(reasons.items())
    )
    return (
        f"{deferred} contact(s) deferred ({why or 'see the audit'}); they go first next run. "
        "Status `deferred`: the run did not finish its work, but nothing failed."
    )


def _run_row(store: StateStore, run_id: str) -> dict | None:
    """The run's counts, or None when the state database is unreachable (the step's own error,
    printed below, then says why the run failed)."""
    from sqlalchemy.exc import OperationalError

    try:
        return next((r for r in store.runs(limit=20) if r["run_id"] == run_id), None)
    except OperationalError:
        print("error: the state database (ERZY_STATE_DATABASE_URL) is unreachable", file=sys.stderr)
        return None


def _error_text(error: Any) -> str:
    """The step's error message, plus its innermost cause when Dagster wrapped it. A
    ``dg.Failure`` is the package's own sentence: its class name is left out."""
    message, root = error.message.strip().removeprefix(_FAILURE_PREFIX), error
    while getattr(root, "cause", None) is not None:
        root = root.cause
    cause = root.message.strip()
    return message if root is error or cause in message else f"{message} — caused by: {cause}"


def print_summary(summaries: list[dict], dry_run: bool) -> None:
    """The summary table of ``erzy-pipelines sync``; a dry run adds what its plan would cost."""
    print()
    _print_table(summaries, ("scope", "status", *SUMMARY_COLUMNS))
    if dry_run and any(s["status"] != "ok" for s in summaries):
        print("\nDRY RUN: nothing was sent, and no plan was made (see the error above).")
    elif dry_run:
        planned = sum(s["planned"] for s in summaries)
        eta = format_duration(
            seconds_for_requests(planned, parse_rate_limits(env("ERZYCALL_RATE_LIMITS")))
        )
        print(
            f"\nDRY RUN: nothing was sent. The plan needs {planned} requests, about {eta} "
            f"at ERZYCALL_RATE_LIMITS={env('ERZYCALL_RATE_LIMITS')}."
        )


def _print_table(rows: list[dict], columns: Sequence[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).rjust(widths[c]) for c in columns))
