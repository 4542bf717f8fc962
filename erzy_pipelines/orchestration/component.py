"""``ErzyCallContactSync``: a sync declared in YAML, as a Dagster Component.

    # defs/sales/defs.yaml
    type: erzy_pipelines.ErzyCallContactSync
    attributes:
      name: sales
      crm:
        url_env: SALES_CRM_URL
        contacts_sql: sql/contacts.sql        # relative to this file's folder
        memberships_sql: sql/memberships.sql
      erzycall:
        api_key_env: SALES_ERZYCALL_KEY
        rate_limits: "60/60,1000/3600"
      schedule: {cron: "0 2 * * *"}

Each component is one ``build_sync`` (``factory.py``): its assets are ``<name>/...``, its jobs,
schedules, sensor, pool and resources ``<name>_...``, and its state is kept apart from every
other sync's. Secrets are the *names* of environment variables. A field that cannot work is
refused when the code location loads, naming the file, the field and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg
import pydantic

from erzy_pipelines.core.budget import DEFAULT_RATE_LIMITS, parse_rate_limits
from erzy_pipelines.orchestration.factory import SyncConfig, build_sync
from erzy_pipelines.orchestration.names import NAME_PATTERN
from erzy_pipelines.orchestration.schedules import DAILY_CRON, RECONCILE_CRON
from erzy_pipelines.settings import REAL_API_BASE_URL


def _cron(value: str) -> str:
    from dagster._utils.schedules import is_valid_cron_string

    if not is_valid_cron_string(value):
        raise ValueError(f"{value!r} is not a cron expression; use five fields, e.g. '0 2 * * *'")
    return value


def _env_name(value: str) -> str:
    if not value or not value.replace("_", "").isalnum() or value[0].isdigit():
        raise ValueError(  # the value is not repeated: it may be the secret itself
            "not an environment variable name: give the variable's name (e.g. SALES_CRM_URL), "
            "never the secret itself"
        )
    return value


#: Errors never repeat what was written in the YAML: a secret put where a name belongs stays out.
_QUIET = pydantic.ConfigDict(hide_input_in_errors=True)


class CrmSettings(dg.Model, dg.Resolvable):
    """The CRM database: the variable holding its SQLAlchemy URL, and the two SQL files."""

    model_config = _QUIET

    url_env: str
    contacts_sql: str
    memberships_sql: str

    check_env = pydantic.field_validator("url_env")(classmethod(lambda cls, v: _env_name(v)))


class ErzyCallSettings(dg.Model, dg.Resolvable):
    """The ErzyCall API: the variable holding the key, the base URL and the key's plan."""

    model_config = _QUIET

    api_key_env: str
    base_url: str = REAL_API_BASE_URL
    rate_limits: str = DEFAULT_RATE_LIMITS
    timeout_seconds: float = pydantic.Field(default=30.0, gt=0)
    allow_insecure_http: bool = False

    check_env = pydantic.field_validator("api_key_env")(classmethod(lambda cls, v: _env_name(v)))

    @pydantic.field_validator("rate_limits")
    @classmethod
    def _check_limits(cls, value: str) -> str:
        try:
            parse_rate_limits(value)
        except ValueError as exc:  # says what is allowed; the variable it names is not used here
            raise ValueError(str(exc).removeprefix("ERZYCALL_RATE_LIMITS: ")) from None
        return value


class StateSettings(dg.Model, dg.Resolvable):
    """The state database (sync state, audit, shared budget): the variable holding its URL."""

    model_config = _QUIET

    url_env: str = "ERZY_STATE_DATABASE_URL"

    check_env = pydantic.field_validator("url_env")(classmethod(lambda cls, v: _env_name(v)))


class ScheduleSettings(dg.Model, dg.Resolvable):
    """The daily full sync."""

    model_config = _QUIET

    cron: str = DAILY_CRON

    check_cron = pydantic.field_validator("cron")(classmethod(lambda cls, v: _cron(v)))


class ReconcileSettings(dg.Model, dg.Resolvable):
    """The weekly reconcile: list ErzyCall, repair contacts deleted or edited there."""

    model_config = _QUIET

    cron: str = RECONCILE_CRON
    enabled: bool = True
    deleted_in_erzycall: Literal["recreate", "respect"] = "recreate"

    check_cron = pydantic.field_validator("cron")(classmethod(lambda cls, v: _cron(v)))


class RemovalSettings(dg.Model, dg.Resolvable):
    """Opt-in: delete from ErzyCall the contacts the sync created once their CRM records are
    gone; above ``max_per_run`` or ``max_share`` of the synced contacts, delete nothing."""

    model_config = _QUIET

    enabled: bool = False
    max_per_run: int = pydantic.Field(default=100, ge=0)
    max_share: float = pydantic.Field(default=0.05, ge=0, le=1)


class PolicySettings(dg.Model, dg.Resolvable):
    """Normalization and budget settings."""

    model_config = _QUIET

    default_region: str = "US"
    max_requests_per_run: int = pydantic.Field(default=0, ge=0)
    max_run_seconds: float = pydantic.Field(default=0.0, ge=0)
    reject_rate_warn: float = pydantic.Field(default=0.2, ge=0, le=1)
    ownership: Literal["merge", "replace"] = "merge"
    lease_seconds: float = pydantic.Field(default=120.0, gt=0)


class ErzyCallContactSync(dg.Component, dg.Model, dg.Resolvable):
    """Keeps an ErzyCall organization's contacts in step with a CRM database: five assets
    (``<name>/crm_contacts`` … ``<name>/sync_audit``) with their checks, a sync and a plan job,
    a daily and a weekly-reconcile schedule, and a sensor keeping the group partitions."""

    name: str
    crm: CrmSettings
    erzycall: ErzyCallSettings
    state: StateSettings = StateSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    removal: RemovalSettings = RemovalSettings()
    policy: PolicySettings = PolicySettings()

    @pydantic.field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"{value!r}: use lower-case letters, digits and _ (a letter first, at most 40 "
                "characters); it prefixes the sync's asset keys, jobs and schedules"
            )
        return value

    def sync_config(self, folder: Path) -> SyncConfig:
        """The factory's config; SQL paths are relative to ``folder`` (the YAML's)."""
        return SyncConfig(
            name=self.name,
            crm_url_env=self.crm.url_env,
            contacts_sql=str(folder / self.crm.contacts_sql),
            memberships_sql=str(folder / self.crm.memberships_sql),
            api_key_env=self.erzycall.api_key_env,
            base_url=self.erzycall.base_url,
            rate_limits=self.erzycall.rate_limits,
            timeout_seconds=self.erzycall.timeout_seconds,
            allow_insecure_http=self.erzycall.allow_insecure_http,
            state_url_env=self.state.url_env,
            default_region=self.policy.default_region,
            max_requests_per_run=self.policy.max_requests_per_run,
            max_run_seconds=self.policy.max_run_seconds,
            reject_rate_warn=self.policy.reject_rate_warn,
            ownership=self.policy.ownership,
            deleted_in_erzycall=self.reconcile.deleted_in_erzycall,
            delete_removed=self.removal.enabled,
            max_deletions_per_run=self.removal.max_per_run,
            max_deletion_share=self.removal.max_share,
            lease_seconds=self.policy.lease_seconds,
            schedule_cron=self.schedule.cron,
            reconcile_cron=self.reconcile.cron,
            reconcile_enabled=self.reconcile.enabled,
        )

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = context.path if context.path.is_dir() else context.path.parent
        return build_sync(self.sync_config(folder))
