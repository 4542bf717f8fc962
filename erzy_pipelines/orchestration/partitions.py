"""CRM contact groups as Dagster partitions.

Each ``group_key`` returned by the memberships query is a dynamic partition, kept current by the
``crm_groups_sensor`` (and by the CLI before it launches a run). One extra partition,
``_ungrouped``, stands for the contacts in no group, so that every contact has a partition and
the daily run (all partitions in one run) covers everyone.

A run's scope is decided from its partition keys: all known partitions → the whole CRM (so a
group that appeared since the last sensor tick is still synced); otherwise the members of the
selected groups, plus the ungrouped contacts when ``_ungrouped`` is selected.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import dagster as dg
from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS

from erzy_pipelines.core.group_figures import UNGROUPED_KEY
from erzy_pipelines.core.scope import SyncScope, scope_from_partition_keys
from erzy_pipelines.orchestration.names import DEFAULT, SyncNames

CRM_GROUPS_PARTITIONS_NAME = DEFAULT.partitions


@functools.cache
def partitions_def(names: SyncNames = DEFAULT) -> dg.DynamicPartitionsDefinition:
    """A sync's group partitions (``crm_groups``, or ``<name>_crm_groups``): one object per
    sync, shared by its assets, jobs and schedules."""
    return dg.DynamicPartitionsDefinition(name=names.partitions)


crm_groups_partitions = partitions_def()


WHOLE_CRM_TAG = "erzy/scope"
WHOLE_CRM_TAGS = {WHOLE_CRM_TAG: "all"}
"""Run tag (value ``all``) of the runs that are meant to cover the whole CRM whatever partitions
are registered: the daily schedule, the weekly reconcile, ``erzy-pipelines sync``."""


def whole_only_if_complete(
    scope: SyncScope, selected: Sequence[str], crm_groups: Iterable[str], *, asked_whole: bool
) -> SyncScope:
    """A run that selected every *registered* partition is a run over the whole CRM only if it
    asked for it (``WHOLE_CRM_TAG``) or its partitions cover every group the CRM has now: a
    group the sensor has not registered yet would otherwise turn a group run into a full one
    (and let removal run). Otherwise it is a run over the groups it selected."""
    if scope.groups is not None or not selected or asked_whole:
        return scope
    if set(desired_partition_keys(crm_groups)) <= set(selected):
        return scope
    return SyncScope(
        groups=frozenset(set(selected) - {UNGROUPED_KEY}),
        include_ungrouped=UNGROUPED_KEY in selected,
    )


def run_partition_keys(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> list[str]:
    """The partition keys a run covers ([] for a run without partitions)."""
    if not context.has_partition_key and not context.has_partition_key_range:
        return []
    return list(context.partition_keys)


def scope_for(
    context: dg.AssetExecutionContext | dg.OpExecutionContext, names: SyncNames = DEFAULT
) -> SyncScope:
    known = context.instance.get_dynamic_partitions(names.partitions)
    return scope_from_partition_keys(run_partition_keys(context), known)


def usable_partition_key(group_key: str) -> bool:
    """Dagster refuses some substrings in partition keys; such groups sync only in full runs."""
    return bool(group_key) and not any(bad in group_key for bad in INVALID_PARTITION_SUBSTRINGS)


def desired_partition_keys(group_keys: Iterable[str]) -> list[str]:
    """The partitions that should exist for these CRM groups (plus ``_ungrouped``)."""
    keys = sorted({k for k in group_keys if usable_partition_key(k)} - {UNGROUPED_KEY})
    return [UNGROUPED_KEY, *keys]


def partition_changes(
    desired: Sequence[str], existing: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(keys to add, keys to delete) to make the dynamic partitions equal ``desired``."""
    existing_set, desired_set = set(existing), set(desired)
    return [k for k in desired if k not in existing_set], sorted(existing_set - desired_set)


def sync_partitions(
    instance: dg.DagsterInstance, group_keys: Iterable[str], names: SyncNames = DEFAULT
) -> tuple[list[str], list[str]]:
    """Make the instance's partitions match the CRM's groups; returns (added, deleted)."""
    desired = desired_partition_keys(group_keys)
    added, deleted = partition_changes(desired, instance.get_dynamic_partitions(names.partitions))
    if added:
        instance.add_dynamic_partitions(names.partitions, added)
    for key in deleted:
        instance.delete_dynamic_partition(names.partitions, key)
    return added, deleted
