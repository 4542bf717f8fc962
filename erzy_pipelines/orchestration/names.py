"""What one sync's Dagster objects are called, so several syncs fit in one code location.

The sync configured by environment variables keeps the names it always had (``prefix=None``):
assets ``crm_contacts`` … ``sync_audit``, jobs ``erzycall_sync`` and ``erzycall_plan``, pool
``erzycall_api``, resources ``crm``, ``state``, ``policy`` and ``erzycall``. A named sync (a
YAML component, or ``build_sync`` with a name) puts its name in front of each: asset keys
``sales/crm_contacts``, jobs ``sales_erzycall_sync``, pool ``sales_erzycall_api``, resource
``sales_crm`` and so on. Its name is also its state namespace (see ``sync/accounts.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from erzy_pipelines.settings import SYNC_NAME

NAME_PATTERN = SYNC_NAME
ASSETS = (
    "crm_contacts",
    "normalized_contacts",
    "deduped_contacts",
    "erzycall_contacts",
    "sync_audit",
)


@dataclass(frozen=True)
class SyncNames:
    prefix: str | None = None

    def __post_init__(self) -> None:
        if self.prefix is not None and not NAME_PATTERN.match(self.prefix):
            raise ValueError(
                f"sync name {self.prefix!r}: use lower-case letters, digits and _ (a letter "
                "first, at most 40 characters); it prefixes asset keys, jobs and schedules"
            )

    def name(self, base: str) -> str:
        """A job, schedule, sensor, op, partitions definition, pool or resource name."""
        return f"{self.prefix}_{base}" if self.prefix else base

    def key(self, base: str) -> dg.AssetKey:
        return dg.AssetKey([self.prefix, base] if self.prefix else [base])

    @property
    def asset_keys(self) -> tuple[dg.AssetKey, ...]:
        return tuple(self.key(base) for base in ASSETS)

    @property
    def group(self) -> str:
        """The asset group shown in the UI."""
        return self.name("erzycall_sync")

    @property
    def sync_job(self) -> str:
        return self.name("erzycall_sync")

    @property
    def plan_job(self) -> str:
        return self.name("erzycall_plan")

    @property
    def partitions(self) -> str:
        return self.name("crm_groups")

    @property
    def pool(self) -> str:
        return self.name("erzycall_api")

    @property
    def namespace(self) -> str:
        """The state namespace: "" for the environment-variable sync, else the name."""
        return self.prefix or ""

    @property
    def label(self) -> str:
        """How logs and messages name the sync."""
        return f"sync {self.prefix!r}" if self.prefix else "the sync"


DEFAULT = SyncNames()
