"""Which CRM contacts a run covers: every contact, or the members of some groups.

The engine decides deletions, removal and what "vanished" means from the scope; the Dagster side
only maps a run's partitions onto one (``orchestration/partitions.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from erzy_pipelines.core.group_figures import UNGROUPED_KEY


@dataclass(frozen=True)
class SyncScope:
    """Which CRM contacts a run covers. ``groups=None`` means every contact."""

    groups: frozenset[str] | None
    include_ungrouped: bool

    @property
    def label(self) -> str:
        if self.groups is None:
            return "all"
        names = sorted(self.groups) + ([UNGROUPED_KEY] if self.include_ungrouped else [])
        return ",".join(names)


FULL_SCOPE = SyncScope(groups=None, include_ungrouped=True)


def scope_from_partition_keys(selected: Sequence[str], known: Iterable[str]) -> SyncScope:
    """The scope of a run over ``selected`` partitions when ``known`` partitions exist."""
    selected_set = set(selected)
    if not selected_set or selected_set >= set(known):
        return FULL_SCOPE
    return SyncScope(
        groups=frozenset(selected_set - {UNGROUPED_KEY}),
        include_ungrouped=UNGROUPED_KEY in selected_set,
    )


def unknown_groups(scope: SyncScope, crm_groups: Iterable[str]) -> list[str]:
    """Selected groups the CRM does not have (a partition added by hand, or a group deleted
    since the sensor's last tick). A full run has none: it covers whatever the CRM holds."""
    if scope.groups is None:
        return []
    return sorted(scope.groups - set(crm_groups))
