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

import dagster as dg
from dagster._utils.schedules import is_valid_cron_string

from erzy_pipelines.orchestration.assets.dry_run import build_plan_job
from erzy_pipelines.orchestration.assets.sync import build_sync_asset
from erzy_pipelines.orchestration.names import SyncNames
from erzy_pipelines.orchestration.resources import (
    CrmDatabaseResource,
    ErzyCallResource,
    SyncPolicyResource,
    SyncStateResource,
)
from erzy_pipelines.orchestration.schedules import (
    build_daily_schedule,
    build_reconcile_schedule,
    build_sync_job,
)
from erzy_pipelines.orchestration.sensors import build_groups_sensor
from erzy_pipelines.settings import ConfigError, Source, SyncConfig, label, options


def validate(config: SyncConfig, source: Source = "python") -> None:
    """``SyncConfig.validate``, plus what only Dagster can check: the cron expressions."""
    config.validate(source)
    for field, opt in options():
        value = getattr(config, field.name)
        if opt.cron and not is_valid_cron_string(value):
            raise ConfigError(
                f"{label(field.name, source)}: {value!r} is not a cron expression; use five "
                "fields, e.g. '0 2 * * *'"
            )


def resources_for(config: SyncConfig) -> dict[str, dg.ConfigurableResource]:
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


def build_sync(config: SyncConfig, source: Source = "python") -> dg.Definitions:
    """A complete sync: five assets with their checks, the sync and plan jobs, the daily and
    weekly-reconcile schedules, the groups sensor and the resources. ``source``: where the
    config came from, so an error names the setting as the user wrote it."""
    validate(config, source)
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
        resources=resources_for(config),
    )
