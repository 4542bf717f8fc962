"""Every environment variable the package reads, with its default, in one table.

The definitions fill in defaults for unset variables *before* building resources, so resources
can use ``dg.EnvVar`` for everything: Dagster's UI then shows variable names, never values,
which keeps the API key out of the config view.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from erzy_pipelines.core.budget import DEFAULT_RATE_LIMITS
from erzy_pipelines.demo import DEMO_API_KEY

PACKAGE_DIR = Path(__file__).resolve().parent
SQL_DIR = PACKAGE_DIR / "sql"
REAL_API_BASE_URL = "https://app.erzycall.com/api/v1"


class SettingError(ValueError):
    """An environment variable holds a value the package cannot use; the message names it."""


def data_dir() -> Path:
    """Where the demo CRM, the default state database and Dagster's local storage live."""
    return Path(os.environ.get("ERZY_DATA_DIR", "data")).resolve()


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str


def _settings() -> tuple[Setting, ...]:
    data = data_dir()
    return (
        Setting("ERZYCALL_API_KEY", DEMO_API_KEY, "API key (X-API-Key); the sandbox's demo key"),
        Setting("ERZYCALL_BASE_URL", REAL_API_BASE_URL, "API base URL"),
        Setting(
            "ERZYCALL_RATE_LIMITS", DEFAULT_RATE_LIMITS, "the key's plan: requests/seconds windows"
        ),
        Setting("ERZYCALL_TIMEOUT_SECONDS", "30", "HTTP timeout of one request, seconds"),
        Setting("ERZYCALL_ALLOW_INSECURE_HTTP", "false", "allow http:// to a non-loopback host"),
        Setting(
            "CRM_DATABASE_URL", f"sqlite:///{data / 'demo_crm.sqlite'}", "SQLAlchemy URL of the CRM"
        ),
        Setting("CRM_CONTACTS_SQL", str(SQL_DIR / "contacts.sql"), "one row per CRM contact"),
        Setting(
            "CRM_MEMBERSHIPS_SQL", str(SQL_DIR / "memberships.sql"), "one row per (contact, group)"
        ),
        Setting("ERZY_DEFAULT_REGION", "US", "region for numbers without a country code"),
        Setting(
            "ERZY_STATE_DATABASE_URL",
            f"sqlite:///{data / 'sync_state.sqlite'}",
            "sync state + audit",
        ),
        Setting("ERZY_MAX_REQUESTS_PER_RUN", "0", "most requests one run may spend (0 = no cap)"),
        Setting("ERZY_MAX_RUN_SECONDS", "0", "longest a run may send for, seconds (0 = no cap)"),
        Setting("ERZY_REJECT_RATE_WARN", "0.2", "reject share above which the check warns"),
        Setting(
            "ERZY_OWNERSHIP",
            "merge",
            "merge: keep tags, groups and custom fields added in ErzyCall; replace: the CRM only",
        ),
        Setting("ERZY_LEASE_SECONDS", "120", "a contact's lease; renewed while a run waits"),
        Setting("ERZY_SCHEDULE_CRON", "0 2 * * *", "cron of the daily full sync (UTC)"),
        Setting(
            "ERZY_RECONCILE_CRON", "0 3 * * 0", "cron of the weekly reconcile (UTC; Sundays 03:00)"
        ),
        Setting("ERZY_RECONCILE_ENABLED", "true", "the weekly reconcile schedule starts on"),
        Setting(
            "ERZY_DELETE_REMOVED",
            "false",
            "delete from ErzyCall the contacts the sync created once their CRM records are gone",
        ),
        Setting("ERZY_MAX_DELETIONS_PER_RUN", "100", "above this many, a run deletes nothing"),
        Setting(
            "ERZY_MAX_DELETION_SHARE", "0.05", "above this share of synced contacts, none either"
        ),
        Setting(
            "ERZY_DELETED_IN_ERZYCALL",
            "recreate",
            "a contact deleted in ErzyCall, unchanged in the CRM: recreate, or respect (until the "
            "CRM record changes)",
        ),
        Setting(
            "ERZY_DATA_DIR", "data", "folder for the demo CRM, state and local Dagster storage"
        ),
    )


SETTINGS_NAMES = tuple(s.name for s in _settings())


def settings() -> tuple[Setting, ...]:
    return _settings()


def apply_env_defaults() -> None:
    """Set every unset variable to its default, so ``dg.EnvVar`` always resolves."""
    for setting in _settings():
        os.environ.setdefault(setting.name, setting.default)


def env(name: str) -> str:
    """The effective value of a setting (environment, else default)."""
    for setting in _settings():
        if setting.name == name:
            return os.environ.get(name, setting.default)
    raise KeyError(name)
