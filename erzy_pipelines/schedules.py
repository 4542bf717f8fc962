"""The daily full sync: every group and the ungrouped contacts, in one run, within one budget."""

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from erzy_pipelines.partitions import CRM_GROUPS_PARTITIONS_NAME

GROUP = "erzycall_sync"

sync_job = dg.define_asset_job(
    "erzycall_sync",
    selection=dg.AssetSelection.groups(GROUP),
    description="CRM → normalize → dedupe → upsert → audit for the selected contact groups.",
)


def full_sync_run_request(
    instance: dg.DagsterInstance, run_key: str | None = None
) -> dg.RunRequest | None:
    """One run over the whole partition range: a full sync that spends each change once."""
    keys = instance.get_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME)
    if not keys:
        return None
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
    def daily_erzycall_sync(context: dg.ScheduleEvaluationContext):
        request = full_sync_run_request(
            context.instance,
            run_key=context.scheduled_execution_time.isoformat()
            if context.scheduled_execution_time
            else None,
        )
        if request is None:
            return dg.SkipReason(
                "No contact-group partitions yet: turn on crm_groups_sensor first."
            )
        return request

    return daily_erzycall_sync
