"""``build_sync``: one complete sync — its assets and checks, jobs, schedules, sensor and
resources — from a typed ``SyncConfig``.

Every way of declaring a sync goes through here: the single sync configured by environment
variables (``definitions.py``), a YAML component (``component.py``), or Python. Secrets are
given as the *names* of environment variables (``dg.EnvVar``), never as values, so the UI and
the YAML never hold them. Several syncs fit in one code location: each has its own names
(``names.py``), partitions, pool and state namespace; two syncs with the same API key share
that key's budget through the state database, as every run with that key does.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string

from erzy_pipelines.core.budget import DEFAULT_RATE_LIMITS, parse_rate_limits
from erzy_pipelines.core.ownership import MODES
from erzy_pipelines.orchestration.assets.plan import build_plan_job
from erzy_pipelines.orchestration.assets.sync import build_sync_asset
from erzy_pipelines.orchestration.names import SyncNames
from erzy_pipelines.orchestration.resources import (
    CrmDatabaseResource,
    ErzyCallResource,
    SyncPolicyResource,
    SyncStateResource,
)
from erzy_pipelines.orchestration.schedules import (
    DAILY_CRON,
    RECONCILE_CRON,
    build_daily_schedule,
    build_reconcile_schedule,
    build_sync_job,
)
from erzy_pipelines.orchestration.sensors import build_groups_sensor
from erzy_pipelines.settings import REAL_API_BASE_URL, SQL_DIR
from erzy_pipelines.sync.run import DELETED_IN_ERZYCALL_MODES


class ConfigError(ValueError):
    """A sync's configuration cannot work; the message names the field and what is allowed."""


@dataclass(frozen=True)
class SyncConfig:
    """Everything one sync needs. ``name=None`` is the environment-variable sync (names
    without a prefix); ``*_env`` fields are the names of environment variables."""

    name: str | None = None
    crm_url_env: str = "CRM_DATABASE_URL"
    contacts_sql: str = str(SQL_DIR / "contacts.sql")
    memberships_sql: str = str(SQL_DIR / "memberships.sql")
    api_key_env: str = "ERZYCALL_API_KEY"
    base_url: str = REAL_API_BASE_URL
    rate_limits: str = DEFAULT_RATE_LIMITS
    timeout_seconds: float = 30.0
    allow_insecure_http: bool = False
    state_url_env: str = "ERZY_STATE_DATABASE_URL"
    default_region: str = "US"
    max_requests_per_run: int = 0
    max_run_seconds: float = 0.0
    reject_rate_warn: float = 0.2
    ownership: str = "merge"
    deleted_in_erzycall: str = "recreate"
    delete_removed: bool = False
    max_deletions_per_run: int = 100
    max_deletion_share: float = 0.05
    lease_seconds: float = 120.0
    schedule_cron: str = DAILY_CRON
    reconcile_cron: str = RECONCILE_CRON
    reconcile_enabled: bool = True

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first field that cannot work."""
        try:
            SyncNames(self.name)
        except ValueError as exc:
            raise ConfigError(f"name: {exc}") from None
        try:
            parse_rate_limits(self.rate_limits)
        except ValueError as exc:
            raise ConfigError(f"erzycall.rate_limits: {exc}") from None
        for field, value in (
            ("schedule.cron", self.schedule_cron),
            ("reconcile.cron", self.reconcile_cron),
        ):
            if not is_valid_cron_string(value):
                raise ConfigError(f"{field}: {value!r} is not a cron expression (e.g. '0 2 * * *')")
        _one_of("ownership", self.ownership, MODES)
        _one_of(
            "reconcile.deleted_in_erzycall", self.deleted_in_erzycall, DELETED_IN_ERZYCALL_MODES
        )
        if self.max_deletions_per_run < 0:
            raise ConfigError("removal.max_per_run must be 0 or more")
        if not 0 <= self.max_deletion_share <= 1:
            raise ConfigError("removal.max_share must be between 0 and 1 (0.05 = 5%)")
        if self.lease_seconds < 2 * self.timeout_seconds:
            raise ConfigError(
                f"lease_seconds={self.lease_seconds:g} must be at least twice "
                f"erzycall.timeout_seconds={self.timeout_seconds:g}: a contact's lease is not "
                "renewed while its request is in flight"
            )


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{field}: {value!r} is not one of: {', '.join(allowed)}")


def build_resources(config: SyncConfig) -> dict[str, dg.ConfigurableResource]:
    """The sync's four resources, under its names; secrets stay ``EnvVar`` references."""
    names = SyncNames(config.name)
    return {
        names.name("erzycall"): ErzyCallResource(
            api_key=dg.EnvVar(config.api_key_env),
            base_url=config.base_url,
            rate_limits=config.rate_limits,
            allow_insecure_http=config.allow_insecure_http,
            timeout_seconds=config.timeout_seconds,
        ),
        names.name("crm"): CrmDatabaseResource(
            url=dg.EnvVar(config.crm_url_env),
            contacts_sql_path=config.contacts_sql,
            memberships_sql_path=config.memberships_sql,
        ),
        names.name("state"): SyncStateResource(
            url=dg.EnvVar(config.state_url_env), namespace=names.namespace
        ),
        names.name("policy"): SyncPolicyResource(
            default_region=config.default_region,
            max_requests_per_run=config.max_requests_per_run,
            max_run_seconds=config.max_run_seconds,
            reject_rate_warn=config.reject_rate_warn,
            ownership=config.ownership,
            deleted_in_erzycall=config.deleted_in_erzycall,
            delete_removed=config.delete_removed,
            max_deletions_per_run=config.max_deletions_per_run,
            max_deletion_share=config.max_deletion_share,
            lease_seconds=config.lease_seconds,
        ),
    }


def build_sync(config: SyncConfig) -> dg.Definitions:
    """A complete sync: five assets with their checks, the sync and plan jobs, the daily and
    weekly-reconcile schedules, the groups sensor and the resources."""
    config.validate()
    names = SyncNames(config.name)
    return dg.Definitions(
        assets=[build_sync_asset(names)],
        jobs=[build_sync_job(names), build_plan_job(names)],
        executor=dg.in_process_executor,  # one step per run: no subprocess per step
        schedules=[
            build_daily_schedule(config.schedule_cron, names),
            build_reconcile_schedule(
                config.reconcile_cron, names, running=config.reconcile_enabled
            ),
        ],
        sensors=[build_groups_sensor(names)],
        resources=build_resources(config),
    )
