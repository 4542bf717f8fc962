"""Every setting of a sync, declared once: ``SyncConfig``.

Each field of ``SyncConfig`` carries an ``Option``: the environment variable that sets it for
the environment-variable sync, its key in a YAML component's attributes, what it means, and the
values it may take. Everything else is derived from that one declaration:

- the environment table (``settings()``): ``erzy-pipelines config``, the defaults filled in
  before the definitions load, and the README's configuration table (a test compares them);
- the environment sync's config (``env_sync_config``);
- the YAML component's schema (``orchestration/component.py`` builds its sections from it);
- the checks (``SyncConfig.validate``), which name the setting the way the user wrote it:
  the environment variable, the YAML key, or the Python field.

The definitions fill in defaults for unset variables *before* building resources, so resources
can use ``dg.EnvVar`` for the secrets: Dagster's UI then shows variable names, never values.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import phonenumbers

from erzy_pipelines.core.budget import DEFAULT_RATE_LIMITS, parse_rate_limits
from erzy_pipelines.core.ownership import MODES
from erzy_pipelines.demo import DEMO_API_KEY
from erzy_pipelines.erzycall.transport import validate_base_url
from erzy_pipelines.sync.lease_keeper import DEFAULT_LEASE_SECONDS
from erzy_pipelines.sync.run import DELETED_IN_ERZYCALL_MODES

PACKAGE_DIR = Path(__file__).resolve().parent
SQL_DIR = PACKAGE_DIR / "sql"
REAL_API_BASE_URL = "https://app.erzycall.com/api/v1"
SYNC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
NAME_PATTERN_TEXT = "lower-case letters, digits and _ (a letter first, at most 40 characters)"

#: Where a setting came from, so an error names it as the user wrote it.
Source = Literal["python", "env", "yaml"]


class ConfigError(ValueError):
    """A sync's configuration cannot work; the message names the setting and what is allowed."""


class SettingError(ConfigError):
    """An environment variable holds a value the package cannot use; the message names it."""


def data_dir() -> Path:
    """Where the demo CRM, the default state database and Dagster's local storage live."""
    return Path(os.environ.get("ERZY_DATA_DIR", "data")).resolve()


@dataclass(frozen=True)
class Option:
    """How one ``SyncConfig`` field is set, described and checked.

    ``names_variable``: the field holds the *name* of an environment variable that holds a
    secret (a URL with a password, the API key); the environment sync uses ``env`` itself.
    ``env_default``: the environment's default when it is not the field's (the demo's key and
    databases). ``yaml_required``: a YAML component must give it. ``cron``: checked by the
    Dagster side, which owns schedules. ``relative_path``: in YAML, relative to the file.
    """

    doc: str
    env: str | None = None
    yaml: str | None = None
    choices: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    names_variable: bool = False
    env_default: str | Callable[[], str] | None = None
    yaml_required: bool = False
    cron: bool = False
    relative_path: bool = False
    valid: str = ""

    def valid_values(self) -> str:
        """What the setting accepts, in words (the README's "valid values" column)."""
        if self.valid:
            return self.valid
        if self.choices:
            return ", ".join(f"`{c}`" for c in self.choices)
        if self.ge is not None and self.le is not None:
            return f"{self.ge:g} to {self.le:g}"
        if self.ge is not None:
            return f"{self.ge:g} or more"
        if self.gt is not None:
            return f"more than {self.gt:g}"
        return ""


def option(default: Any, doc: str, **kwargs: Any) -> Any:
    """A ``SyncConfig`` field with its ``Option``."""
    return dataclasses.field(default=default, metadata={"option": Option(doc, **kwargs)})


def _demo_crm_url() -> str:
    return f"sqlite:///{data_dir() / 'demo_crm.sqlite'}"


def _state_url() -> str:
    return f"sqlite:///{data_dir() / 'sync_state.sqlite'}"


@dataclass(frozen=True)
class SyncConfig:
    """Everything one sync needs. ``name=None`` is the environment-variable sync (names
    without a prefix); ``*_env`` fields are the names of environment variables."""

    name: str | None = option(None, f"the sync's name: {NAME_PATTERN_TEXT}", yaml="name")
    crm_url_env: str = option(
        "CRM_DATABASE_URL",
        "SQLAlchemy URL of the CRM",
        env="CRM_DATABASE_URL",
        valid="a SQLAlchemy URL",
        yaml="crm.url_env",
        names_variable=True,
        env_default=_demo_crm_url,
        yaml_required=True,
    )
    contacts_sql: str = option(
        str(SQL_DIR / "contacts.sql"),
        "path to a `.sql` file returning one row per CRM contact",
        env="CRM_CONTACTS_SQL",
        valid="a readable file",
        yaml="crm.contacts_sql",
        yaml_required=True,
        relative_path=True,
    )
    memberships_sql: str = option(
        str(SQL_DIR / "memberships.sql"),
        "path to a `.sql` file returning one row per (contact, group)",
        env="CRM_MEMBERSHIPS_SQL",
        valid="a readable file",
        yaml="crm.memberships_sql",
        yaml_required=True,
        relative_path=True,
    )
    api_key_env: str = option(
        "ERZYCALL_API_KEY",
        "API key (`ek_live_…` / `ek_test_…`)",
        env="ERZYCALL_API_KEY",
        valid="the key from ErzyCall's dashboard",
        yaml="erzycall.api_key_env",
        names_variable=True,
        env_default=DEMO_API_KEY,
        yaml_required=True,
    )
    base_url: str = option(
        REAL_API_BASE_URL,
        "API base URL",
        env="ERZYCALL_BASE_URL",
        valid="an `https://` URL (`http://` only to this machine, or when allowed below)",
        yaml="erzycall.base_url",
    )
    rate_limits: str = option(
        DEFAULT_RATE_LIMITS,
        "your key's plan, `requests/seconds` windows, comma-separated",
        env="ERZYCALL_RATE_LIMITS",
        valid="`requests/seconds` windows, requests ≥ 1, seconds > 0",
        yaml="erzycall.rate_limits",
    )
    timeout_seconds: float = option(
        30.0,
        "HTTP timeout of one request, seconds",
        env="ERZYCALL_TIMEOUT_SECONDS",
        yaml="erzycall.timeout_seconds",
        gt=0,
    )
    allow_insecure_http: bool = option(
        False,
        "allow `http://` to a non-loopback host",
        env="ERZYCALL_ALLOW_INSECURE_HTTP",
        yaml="erzycall.allow_insecure_http",
    )
    state_url_env: str = option(
        "ERZY_STATE_DATABASE_URL",
        "where state, audit and the shared budget live",
        env="ERZY_STATE_DATABASE_URL",
        valid="a SQLAlchemy URL",
        yaml="state.url_env",
        names_variable=True,
        env_default=_state_url,
    )
    default_region: str = option(
        "US",
        "region for numbers written without a country code",
        env="ERZY_DEFAULT_REGION",
        valid="a two-letter region code (`US`, `GB`, `DE`, …)",
        yaml="policy.default_region",
    )
    max_requests_per_run: int = option(
        0,
        "most requests one run may spend (`0` = no cap)",
        env="ERZY_MAX_REQUESTS_PER_RUN",
        yaml="policy.max_requests_per_run",
        ge=0,
    )
    max_run_seconds: float = option(
        0.0,
        "longest one run may send for, seconds (`0` = no cap)",
        env="ERZY_MAX_RUN_SECONDS",
        yaml="policy.max_run_seconds",
        ge=0,
    )
    reject_rate_warn: float = option(
        0.2,
        "reject share above which the check warns",
        env="ERZY_REJECT_RATE_WARN",
        yaml="policy.reject_rate_warn",
        ge=0,
        le=1,
    )
    ownership: str = option(
        "merge",
        "`merge`: keep the tags, groups and custom fields ErzyCall's users add; `replace`: the "
        "CRM is the only source of truth",
        env="ERZY_OWNERSHIP",
        yaml="policy.ownership",
        choices=MODES,
    )
    deleted_in_erzycall: str = option(
        "recreate",
        "a contact deleted in ErzyCall while unchanged in the CRM: `recreate` it at the next "
        "reconcile, or `respect` the deletion until its CRM record changes",
        env="ERZY_DELETED_IN_ERZYCALL",
        yaml="reconcile.deleted_in_erzycall",
        choices=DELETED_IN_ERZYCALL_MODES,
    )
    delete_removed: bool = option(
        False,
        "delete from ErzyCall the contacts the sync created once their CRM records are gone",
        env="ERZY_DELETE_REMOVED",
        yaml="removal.enabled",
    )
    max_deletions_per_run: int = option(
        100,
        "more removable contacts than this and a run deletes none",
        env="ERZY_MAX_DELETIONS_PER_RUN",
        yaml="removal.max_per_run",
        ge=0,
    )
    max_deletion_share: float = option(
        0.05,
        "more than this share of the synced contacts and a run deletes none",
        env="ERZY_MAX_DELETION_SHARE",
        yaml="removal.max_share",
        ge=0,
        le=1,
    )
    lease_seconds: float = option(
        DEFAULT_LEASE_SECONDS,
        "how long a contact's lease lasts; renewed while a run waits; at least twice the "
        "request timeout",
        env="ERZY_LEASE_SECONDS",
        yaml="policy.lease_seconds",
        gt=0,
    )
    schedule_cron: str = option(
        "0 2 * * *",
        "cron of the daily full sync, UTC",
        env="ERZY_SCHEDULE_CRON",
        valid="a five-field cron expression",
        yaml="schedule.cron",
        cron=True,
    )
    reconcile_cron: str = option(
        "0 3 * * 0",
        "cron of the weekly reconcile, UTC (Sundays 03:00)",
        env="ERZY_RECONCILE_CRON",
        valid="a five-field cron expression",
        yaml="reconcile.cron",
        cron=True,
    )
    reconcile_enabled: bool = option(
        True,
        "the reconcile schedule starts on",
        env="ERZY_RECONCILE_ENABLED",
        yaml="reconcile.enabled",
    )

    def validate(self, source: Source = "python") -> None:
        """Raise ``ConfigError`` naming the first setting that cannot work (as ``source``
        spells it). Cron expressions are the Dagster side's to check (``factory.py``)."""
        for field, opt in options():
            value = getattr(self, field.name)
            if value is None:
                continue
            problem = _problem(field.name, opt, value)
            if problem:
                raise ConfigError(f"{label(field.name, source)}: {problem}")
        try:
            validate_base_url(self.base_url, allow_insecure_http=self.allow_insecure_http)
        except ValueError as exc:
            raise ConfigError(
                f"{label('base_url', source)}: {str(exc).split(' (use https')[0]}. Use an "
                "https:// URL (plain http:// only to this machine, or with "
                f"{label('allow_insecure_http', source)}=true)"
            ) from None
        if self.lease_seconds < 2 * self.timeout_seconds:
            raise ConfigError(
                f"{label('lease_seconds', source)}={self.lease_seconds:g} must be at least twice "
                f"{label('timeout_seconds', source)}={self.timeout_seconds:g}: a contact's "
                "lease is not renewed while its request is in flight"
            )


DEFAULTS = SyncConfig()
"""The defaults, for the resources (``orchestration/resources.py``) to take theirs from."""


def _problem(name: str, opt: Option, value: Any) -> str | None:
    """What is wrong with one value, or None."""
    if name == "name":
        return None if SYNC_NAME.match(value) else f"{value!r}: use {NAME_PATTERN_TEXT}"
    if name == "rate_limits":
        try:
            parse_rate_limits(value)
        except ValueError as exc:
            return str(exc)
        return None
    if name == "default_region" and value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        return f"{value!r} is not a region phonenumbers knows (two letters, e.g. US, GB, DE)"
    if opt.choices and value not in opt.choices:
        return f"{value!r} is not one of: {', '.join(opt.choices)}"
    too_low = (opt.ge is not None and value < opt.ge) or (opt.gt is not None and value <= opt.gt)
    too_high = opt.le is not None and value > opt.le
    if too_low or too_high:
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        return f"{shown} must be {opt.valid_values()}"
    return None


def options() -> Iterator[tuple[dataclasses.Field[Any], Option]]:
    """``SyncConfig``'s fields with their options, in declaration order."""
    for field in dataclasses.fields(SyncConfig):
        yield field, field.metadata["option"]


def field_types() -> dict[str, Any]:
    """``SyncConfig``'s field types (``str``, ``int``, ``float``, ``bool``, ``str | None``)."""
    return typing.get_type_hints(SyncConfig)


def label(field_name: str, source: Source) -> str:
    """A setting's name as the user wrote it: its environment variable, YAML key or field."""
    opt = SyncConfig.__dataclass_fields__[field_name].metadata["option"]
    if source == "env" and opt.env:
        return opt.env
    if source in ("yaml", "python") and opt.yaml:
        return opt.yaml
    return field_name


# --------------------------------------------------------------------------- the environment


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, default (as text) and meaning."""

    name: str
    default: str
    meaning: str
    valid: str = ""


def _env_default(field: dataclasses.Field[Any], opt: Option) -> str:
    if opt.env_default is not None:
        return opt.env_default() if callable(opt.env_default) else opt.env_default
    default = field.default
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


DATA_DIR_SETTING = Setting(
    "ERZY_DATA_DIR", "data", "folder for the demo CRM, state and local Dagster storage", "a path"
)


def settings() -> tuple[Setting, ...]:
    """Every environment variable the package reads, with its default."""
    types = field_types()
    found = [
        Setting(
            opt.env,
            _env_default(field, opt),
            opt.doc,
            "`true`, `false`" if types[field.name] is bool else opt.valid_values(),
        )
        for field, opt in options()
        if opt.env
    ]
    return (*found, DATA_DIR_SETTING)


SETTINGS_NAMES = tuple(s.name for s in settings())


def apply_env_defaults() -> None:
    """Set every unset variable to its default, so ``dg.EnvVar`` always resolves."""
    for setting in settings():
        os.environ.setdefault(setting.name, setting.default)


def env(name: str) -> str:
    """The effective value of a setting (environment, else default)."""
    for setting in settings():
        if setting.name == name:
            return os.environ.get(name, setting.default)
    raise KeyError(name)


def _from_env(name: str, kind: Any, choice: bool) -> Any:
    """A variable's value as ``kind``; a choice is read without case or surrounding space."""
    text = env(name)
    if kind is bool:
        return text.strip().lower() in ("1", "true", "yes", "on")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise SettingError(f"{name}={text!r} is not a number; unset it or use e.g. 0") from None
    return text.strip().lower() if choice else text


def env_sync_config() -> SyncConfig:
    """The sync configured by environment variables, defaults applied and checked."""
    apply_env_defaults()
    types = field_types()
    values: dict[str, Any] = {}
    for field, opt in options():
        if not opt.env:
            continue
        if opt.names_variable:
            values[field.name] = opt.env  # the secret stays in the environment
        else:
            values[field.name] = _from_env(opt.env, types[field.name], bool(opt.choices))
    config = SyncConfig(**values)
    try:
        config.validate("env")
    except ConfigError as exc:
        raise SettingError(str(exc)) from None
    return config
