"""Keeps the ``crm_groups`` partitions equal to the CRM's groups: new groups appear, removed go."""

import dagster as dg

from erzy_pipelines.crm.extract import discover_group_keys
from erzy_pipelines.partitions import (
    CRM_GROUPS_PARTITIONS_NAME,
    desired_partition_keys,
    partition_changes,
)
from erzy_pipelines.resources import CrmDatabaseResource


@dg.sensor(
    name="crm_groups_sensor",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reads the CRM's group keys and adds or removes crm_groups partitions to match.",
)
def crm_groups_sensor(context: dg.SensorEvaluationContext, crm: CrmDatabaseResource):
    keys = discover_group_keys(crm.engine(), crm.memberships_sql())
    existing = context.instance.get_dynamic_partitions(CRM_GROUPS_PARTITIONS_NAME)
    added, deleted = partition_changes(desired_partition_keys(keys), existing)
    if not added and not deleted:
        return dg.SkipReason(f"{len(existing)} partitions already match the CRM's groups")
    requests: list = []
    if added:
        requests.append(dg.AddDynamicPartitionsRequest(CRM_GROUPS_PARTITIONS_NAME, added))
    if deleted:
        requests.append(dg.DeleteDynamicPartitionsRequest(CRM_GROUPS_PARTITIONS_NAME, deleted))
    return dg.SensorResult(dynamic_partitions_requests=requests)
