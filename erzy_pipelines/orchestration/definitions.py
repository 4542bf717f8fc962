"""The code location of the sync configured by environment variables: ``build_sync`` (the
same factory a YAML component uses) over ``settings.env_sync_config()``.

Unset environment variables get their defaults first; the secrets (API key, CRM and state
database URLs) reach the resources as ``dg.EnvVar`` references, so the UI never shows them.
"""

from __future__ import annotations

import dagster as dg

from erzy_pipelines.orchestration.factory import build_sync, resources_for
from erzy_pipelines.settings import ConfigError, SettingError, env_sync_config


def build_resources() -> dict[str, dg.ConfigurableResource]:
    """The environment-variable sync's resources. Secrets stay ``EnvVar`` references."""
    return resources_for(env_sync_config())


def build_definitions() -> dg.Definitions:
    """The environment-variable sync, built like any other (``factory.py``); an error names
    the environment variable behind it."""
    try:
        return build_sync(env_sync_config(), source="env")
    except ConfigError as exc:
        raise SettingError(f"{exc} (see the environment variables in the README)") from None


defs = build_definitions()
