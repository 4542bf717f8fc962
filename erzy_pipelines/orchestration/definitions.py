"""The code location of the sync configured by environment variables: ``build_sync`` (the
same factory a YAML component uses) over the settings of ``settings.py``.

Unset environment variables get their defaults first; the secrets (API key, CRM and state
database URLs) reach the resources as ``dg.EnvVar`` references, so the UI never shows them.
"""

from __future__ import annotations

import dagster as dg

from erzy_pipelines.core.ownership import MODES
from erzy_pipelines.orchestration.factory import ConfigError, SyncConfig, build_sync
from erzy_pipelines.orchestration.factory import build_resources as factory_resources
from erzy_pipelines.settings import SettingError, apply_env_defaults, env
from erzy_pipelines.sync.run import DELETED_IN_ERZYCALL_MODES


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


def env_sync_config() -> SyncConfig:
    """The sync configured by environment variables (``settings.py``), defaults applied."""
    apply_env_defaults()
    return SyncConfig(
        name=None,
        crm_url_env="CRM_DATABASE_URL",
        contacts_sql=env("CRM_CONTACTS_SQL"),
        memberships_sql=env("CRM_MEMBERSHIPS_SQL"),
        api_key_env="ERZYCALL_API_KEY",
        base_url=env("ERZYCALL_BASE_URL"),
        rate_limits=env("ERZYCALL_RATE_LIMITS"),
        timeout_seconds=_number("ERZYCALL_TIMEOUT_SECONDS", float),
        allow_insecure_http=_flag("ERZYCALL_ALLOW_INSECURE_HTTP"),
        state_url_env="ERZY_STATE_DATABASE_URL",
        default_region=env("ERZY_DEFAULT_REGION"),
        max_requests_per_run=_number("ERZY_MAX_REQUESTS_PER_RUN", int),
        max_run_seconds=_number("ERZY_MAX_RUN_SECONDS", float),
        reject_rate_warn=_number("ERZY_REJECT_RATE_WARN", float),
        ownership=_choice("ERZY_OWNERSHIP", MODES),
        deleted_in_erzycall=_choice("ERZY_DELETED_IN_ERZYCALL", DELETED_IN_ERZYCALL_MODES),
        delete_removed=_flag("ERZY_DELETE_REMOVED"),
        max_deletions_per_run=_number("ERZY_MAX_DELETIONS_PER_RUN", int),
        max_deletion_share=_number("ERZY_MAX_DELETION_SHARE", float),
        lease_seconds=_lease_seconds(),
        schedule_cron=env("ERZY_SCHEDULE_CRON"),
        reconcile_cron=env("ERZY_RECONCILE_CRON"),
        reconcile_enabled=_flag("ERZY_RECONCILE_ENABLED"),
    )


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The environment-variable sync's resources. Secrets stay ``EnvVar`` references."""
    return factory_resources(env_sync_config())


def build_definitions() -> dg.Definitions:
    """The environment-variable sync, built like any other (``factory.py``)."""
    try:
        return build_sync(env_sync_config())
    except ConfigError as exc:  # name the environment variable behind the field
        raise SettingError(f"{exc} (see the environment variables in the README)") from None


defs = build_definitions()
