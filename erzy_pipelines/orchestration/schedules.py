"""A sync's job and its two schedules: the daily full sync, and the weekly reconcile that lists
ErzyCall and repairs drift (contacts deleted or edited there), each over every group in one
run, within one budget."""

from __future__ import annotations

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from erzy_pipelines.orchestration.names import DEFAULT, SyncNames
from erzy_pipelines.orchestration.partitions import UNGROUPED_KEY, WHOLE_CRM_TAGS


def build_sync_job(names: SyncNames = DEFAULT) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        names.sync_job,
        selection=dg.AssetSelection.groups(names.group),
        executor_def=dg.in_process_executor,
        description="CRM → normalize → dedupe → upsert → audit for the selected contact groups. "
        "Launch it for some groups (partitions) or backfill them from its Partitions tab; the "
        "daily schedule runs every group in one run.",
    )


sync_job = build_sync_job()


def full_sync_run_request(
    instance: dg.DagsterInstance,
    run_key: str | None = None,
    names: SyncNames = DEFAULT,
    *,
    trigger: str = "daily_schedule",
    run_config: dict | None = None,
) -> dg.RunRequest:
    """One run over the whole partition range: a full sync that spends each change once.

    The run is tagged as a whole-CRM run (``WHOLE_CRM_TAG``), so the request does not wait for
    the sensor: on an instance where it never ran, ``_ungrouped`` alone is the full range and
    the run still syncs every group and the ungrouped contacts.
    """
    keys = instance.get_dynamic_partitions(names.partitions)
    if UNGROUPED_KEY not in keys:
        instance.add_dynamic_partitions(names.partitions, [UNGROUPED_KEY])
        keys = instance.get_dynamic_partitions(names.partitions)
    return dg.RunRequest(
        run_key=run_key,
        run_config=run_config or {},
        tags={
            ASSET_PARTITION_RANGE_START_TAG: keys[0],
            ASSET_PARTITION_RANGE_END_TAG: keys[-1],
            "erzy/trigger": trigger,
            **WHOLE_CRM_TAGS,  # the whole CRM even before the sensor registered every group
        },
    )


def _run_key(context: dg.ScheduleEvaluationContext) -> str | None:
    moment = context.scheduled_execution_time
    return moment.isoformat() if moment else None


def build_daily_schedule(cron: str, names: SyncNames = DEFAULT) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=names.name("daily_erzycall_sync"),
        cron_schedule=cron,
        job_name=names.sync_job,
        execution_timezone="UTC",
        description="Full sync of every contact group and the ungrouped contacts "
        "(ERZY_SCHEDULE_CRON, or schedule.cron of a YAML sync).",
    )
    def daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return full_sync_run_request(context.instance, _run_key(context), names)

    return daily


def build_reconcile_schedule(
    cron: str, names: SyncNames = DEFAULT, *, running: bool = True
) -> dg.ScheduleDefinition:
    """The weekly reconcile: a full resync (one listing of ErzyCall, ⌈N/100⌉ requests) that
    repairs contacts deleted or edited in ErzyCall with only the requests the drift needs."""
    op = names.name("sync_contacts")

    @dg.schedule(
        name=names.name("weekly_erzycall_reconcile"),
        cron_schedule=cron,
        job_name=names.sync_job,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
        ),
        description="Lists ErzyCall and repairs drift (contacts deleted or edited there) for "
        "every group, in one run (ERZY_RECONCILE_CRON, or reconcile.cron of a YAML sync).",
    )
    def reconcile(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return full_sync_run_request(
            context.instance,
            _run_key(context),
            names,
            trigger="weekly_reconcile",
            run_config={"ops": {op: {"config": {"full_resync": True}}}},
        )

    return reconcile
