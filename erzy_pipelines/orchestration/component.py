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

The YAML schema is derived from ``settings.SyncConfig``: each section (``crm``, ``erzycall``,
``state``, ``schedule``, ``reconcile``, ``removal``, ``policy``) holds the fields whose
``Option.yaml`` names it, with the same defaults, ranges and choices as the environment sync.

Each component is one ``build_sync`` (``factory.py``): its assets are ``<name>/...``, its jobs,
schedules, sensor, pool and resources ``<name>_...``, and its state is kept apart from every
other sync's. Secrets are the *names* of environment variables. A field that cannot work is
refused when the code location loads, naming the file, the field and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pydantic

from erzy_pipelines.orchestration.factory import build_sync
from erzy_pipelines.settings import (
    NAME_PATTERN_TEXT,
    SYNC_NAME,
    Option,
    SyncConfig,
    field_types,
    options,
)


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


def _rate_limits(value: str) -> str:
    from erzy_pipelines.core.budget import parse_rate_limits

    parse_rate_limits(value)  # its ValueError says what to fix
    return value


class _Section(dg.Model, dg.Resolvable):
    #: Errors never repeat what was written: a secret put where a name belongs stays out.
    model_config = pydantic.ConfigDict(hide_input_in_errors=True)


_SECTION_DOCS = {
    "crm": "The CRM database: the variable holding its SQLAlchemy URL, and the two SQL files.",
    "erzycall": "The ErzyCall API: the variable holding the key, the base URL and the key's plan.",
    "state": "The state database (sync state, audit, shared budget): the variable holding its URL.",
    "schedule": "The daily full sync.",
    "reconcile": "The weekly reconcile: list ErzyCall, repair contacts deleted or edited there.",
    "removal": "Opt-in: delete from ErzyCall the contacts the sync created once their CRM "
    "records are gone; above ``max_per_run`` or ``max_share`` of the synced contacts, none.",
    "policy": "Normalization, budget and ownership settings.",
}


def _field(name: str, opt: Option, kind: Any, default: Any) -> tuple[Any, Any]:
    annotation = Literal[opt.choices] if opt.choices else kind  # type: ignore[valid-type]
    return annotation, pydantic.Field(
        default=... if opt.yaml_required else default,
        description=opt.doc,
        ge=opt.ge,
        gt=opt.gt,
        le=opt.le,
    )


def _section_model(section: str) -> type[_Section]:
    """The YAML section ``section`` as a model, built from the options that name it."""
    types, fields, validators = field_types(), {}, {}
    for field, opt in options():
        if not opt.yaml or not opt.yaml.startswith(f"{section}."):
            continue
        key = opt.yaml.split(".", 1)[1]
        fields[key] = _field(key, opt, types[field.name], field.default)
        check = _env_name if opt.names_variable else _cron if opt.cron else None
        if field.name == "rate_limits":
            check = _rate_limits
        if check is not None:
            validators[f"_check_{key}"] = pydantic.field_validator(key)(
                classmethod(lambda cls, v, check=check: check(v))
            )
    name = f"{section.capitalize()}Settings"
    model = pydantic.create_model(
        name, __base__=_Section, __doc__=_SECTION_DOCS[section], __validators__=validators,
        __module__=__name__, **fields,
    )
    return model


CrmSettings = _section_model("crm")
ErzyCallSettings = _section_model("erzycall")
StateSettings = _section_model("state")
ScheduleSettings = _section_model("schedule")
ReconcileSettings = _section_model("reconcile")
RemovalSettings = _section_model("removal")
PolicySettings = _section_model("policy")


class ErzyCallContactSync(dg.Component, dg.Model, dg.Resolvable):
    """Keeps an ErzyCall organization's contacts in step with a CRM database: five assets
    (``<name>/crm_contacts`` … ``<name>/sync_audit``) with their checks, a sync and a plan job,
    a daily and a weekly-reconcile schedule, and a sensor keeping the group partitions."""

    name: str
    crm: CrmSettings  # type: ignore[valid-type]
    erzycall: ErzyCallSettings  # type: ignore[valid-type]
    state: StateSettings = StateSettings()  # type: ignore[valid-type]
    schedule: ScheduleSettings = ScheduleSettings()  # type: ignore[valid-type]
    reconcile: ReconcileSettings = ReconcileSettings()  # type: ignore[valid-type]
    removal: RemovalSettings = RemovalSettings()  # type: ignore[valid-type]
    policy: PolicySettings = PolicySettings()  # type: ignore[valid-type]

    @pydantic.field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not SYNC_NAME.match(value):
            raise ValueError(
                f"{value!r}: use {NAME_PATTERN_TEXT}; it prefixes the sync's asset keys, jobs "
                "and schedules"
            )
        return value

    def sync_config(self, folder: Path) -> SyncConfig:
        """The factory's config; SQL paths are relative to ``folder`` (the YAML's)."""
        values: dict[str, Any] = {}
        for field, opt in options():
            if not opt.yaml:
                continue
            section, _, key = opt.yaml.rpartition(".")
            value = getattr(getattr(self, section), key) if section else getattr(self, key)
            values[field.name] = str(folder / value) if opt.relative_path else value
        return SyncConfig(**values)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = context.path if context.path.is_dir() else context.path.parent
        return build_sync(self.sync_config(folder), source="yaml")
