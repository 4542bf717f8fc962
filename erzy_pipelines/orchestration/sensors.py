"""Keeps a sync's group partitions equal to the CRM's groups: new groups appear, removed go."""

from __future__ import annotations

import dagster as dg

from erzy_pipelines.crm.extract import discover_group_keys
from erzy_pipelines.orchestration.names import DEFAULT, SyncNames
from erzy_pipelines.orchestration.partitions import desired_partition_keys, partition_changes


def build_groups_sensor(names: SyncNames = DEFAULT) -> dg.SensorDefinition:
    partitions, crm_key = names.partitions, names.name("crm")

    @dg.sensor(
        name=names.name("crm_groups_sensor"),
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={crm_key},
        description=f"Reads the CRM's group keys and adds or removes {partitions} partitions "
        "to match.",
    )
    def groups_sensor(context: dg.SensorEvaluationContext):
        crm = getattr(context.resources, crm_key)
        keys = discover_group_keys(crm.engine(), crm.memberships_sql())
        existing = context.instance.get_dynamic_partitions(partitions)
        added, deleted = partition_changes(desired_partition_keys(keys), existing)
        if not added and not deleted:
            return dg.SkipReason(f"{len(existing)} partitions already match the CRM's groups")
        requests: list = []
        if added:
            requests.append(dg.AddDynamicPartitionsRequest(partitions, added))
        if deleted:
            requests.append(dg.DeleteDynamicPartitionsRequest(partitions, deleted))
        return dg.SensorResult(dynamic_partitions_requests=requests)

    return groups_sensor


crm_groups_sensor = build_groups_sensor()
