"""The one Definitions object: the sync assets (with their checks), resources, the sync and
plan jobs, the daily schedule and the groups sensor.

Unset environment variables get their defaults first (see ``settings.py``), so every resource
field can come from ``dg.EnvVar`` and the UI never shows a secret's value.
"""

from __future__ import annotations

import dagster as dg

from erzy_pipelines.assets.plan import erzycall_plan
from erzy_pipelines.assets.sync import sync_contacts
from erzy_pipelines.core.ownership import MODES
from erzy_pipelines.resources import (
    CrmDatabaseResource,
    ErzyCallResource,
    SyncPolicyResource,
    SyncStateResource,
)
from erzy_pipelines.schedules import build_daily_schedule, sync_job
from erzy_pipelines.sensors import crm_groups_sensor
from erzy_pipelines.settings import SettingError, apply_env_defaults, env


def _number(name: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(env(name))
    except ValueError:
        message = f"{name}={env(name)!r} is not a number; unset it or use e.g. 0"
        raise SettingError(message) from None


def _flag(name: str) -> bool:
    return env(name).strip().lower() in ("1", "true", "yes", "on")


def _choice(name: str, allowed: tuple[str, ...]) -> str:
    value = env(name).strip().lower()
    if value not in allowed:
        raise SettingError(f"{name}={env(name)!r} is not one of: {', '.join(allowed)}")
    return value


def _lease_seconds() -> float:
    """A lease is renewed while a run waits, not while one request is in flight: it must
    outlast the longest request (two timeouts, for a margin)."""
    lease = _number("ERZY_LEASE_SECONDS", float)
    timeout = _number("ERZYCALL_TIMEOUT_SECONDS", float)
    if lease < 2 * timeout:
        raise SettingError(
            f"ERZY_LEASE_SECONDS={lease:g} must be at least twice ERZYCALL_TIMEOUT_SECONDS="
            f"{timeout:g}: a contact's lease is not renewed while its request is in flight"
        )
    return lease


def build_resources() -> dict[str, object]:
    """Resources from the environment (defaults applied). Secrets stay ``EnvVar`` references."""
    apply_env_defaults()
    return {
        "erzycall": ErzyCallResource(
            api_key=dg.EnvVar("ERZYCALL_API_KEY"),
            base_url=dg.EnvVar("ERZYCALL_BASE_URL"),
            rate_limits=dg.EnvVar("ERZYCALL_RATE_LIMITS"),
            allow_insecure_http=_flag("ERZYCALL_ALLOW_INSECURE_HTTP"),
            timeout_seconds=_number("ERZYCALL_TIMEOUT_SECONDS", float),
        ),
        "crm": CrmDatabaseResource(
            url=dg.EnvVar("CRM_DATABASE_URL"),
            contacts_sql_path=dg.EnvVar("CRM_CONTACTS_SQL"),
            memberships_sql_path=dg.EnvVar("CRM_MEMBERSHIPS_SQL"),
        ),
        "state": SyncStateResource(url=dg.EnvVar("ERZY_STATE_DATABASE_URL")),
        "policy": SyncPolicyResource(
            default_region=dg.EnvVar("ERZY_DEFAULT_REGION"),
            max_requests_per_run=_number("ERZY_MAX_REQUESTS_PER_RUN", int),
            max_run_seconds=_number("ERZY_MAX_RUN_SECONDS", float),
            reject_rate_warn=_number("ERZY_REJECT_RATE_WARN", float),
            ownership=_choice("ERZY_OWNERSHIP", MODES),
            lease_seconds=_lease_seconds(),
        ),
    }


def build_definitions() -> dg.Definitions:
    apply_env_defaults()
    return dg.Definitions(
        assets=[sync_contacts],
        jobs=[sync_job, erzycall_plan],
        executor=dg.in_process_executor,  # one step per run: no subprocess per step
        schedules=[build_daily_schedule(env("ERZY_SCHEDULE_CRON"))],
        sensors=[crm_groups_sensor],
        resources=build_resources(),
    )


defs = build_definitions()
