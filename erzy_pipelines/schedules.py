"""The daily full sync: every group and the ungrouped contacts, in one run, within one budget."""

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from erzy_pipelines.assets.sync import GROUP
from erzy_pipelines.partitions import CRM_GROUPS_PARTITIONS_NAME, UNGROUPED_KEY

sync_job = dg.define_asset_job(
    "erzycall_sync",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    description="CRM → normalize → dedupe → upsert → audit for the selected contact groups. "
    "Launch it for some groups (partitions) or backfill them from its Partitions tab; the "
    "daily schedule runs every group in one run.",
)


def full_sync_run_request(
    instance: dg.DagsterInstance, run_key: str | None = None
) -> dg.RunRequest:
    """One run over the whole partition range: a full sync that spends each change once.

    A run over every known partition covers the whole CRM (see ``partitions.py``), so the
    request does not wait for the sensor: on an instance where it never ran, ``_ungrouped``
    alone is the full range and the run still syncs every group and the ungrouped contacts.
    """
    keys = instance.get_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME)
    if UNGROUPED_KEY not in keys:
        instance.add_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME, [UNGROUPED_KEY])
        keys = instance.get_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME)
    return dg.RunRequest(
        run_key=run_key,
        tags={
            ASSET_PARTITION_RANGE_START_TAG: keys[0],
            ASSET_PARTITION_RANGE_END_TAG: keys[-1],
            "erzy/trigger": "daily_schedule",
        },
    )


def build_daily_schedule(cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="daily_erzycall_sync",
        cron_schedule=cron,
        job=sync_job,
        execution_timezone="UTC",
        description="Full sync of every contact group and the ungrouped contacts "
        "(ERZY_SCHEDULE_CRON).",
    )
    def daily_erzycall_sync(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return full_sync_run_request(
            context.instance,
            run_key=context.scheduled_execution_time.isoformat()
            if context.scheduled_execution_time
            else None,
        )

    return daily_erzycall_sync
