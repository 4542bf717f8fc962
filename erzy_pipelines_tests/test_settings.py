"""One config model (``settings.SyncConfig``): the README's table, the environment, the YAML
component and the resources all say what it says, and errors name the setting as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from erzy_pipelines.orchestration import component
from erzy_pipelines.orchestration.resources import ErzyCallResource, SyncPolicyResource
from erzy_pipelines.settings import (
    DEFAULTS,
    SettingError,
    SyncConfig,
    data_dir,
    env_sync_config,
    options,
    settings,
)

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def _environment_restored(monkeypatch):
    """``env_sync_config`` fills unset variables with defaults; give the environment back."""
    for setting in settings():
        monkeypatch.setenv(setting.name, os.environ.get(setting.name, setting.default))


def _readme_table() -> dict[str, list[str]]:
    lines = README.read_text().splitlines()
    start = lines.index("| variable | meaning | default | valid values |")
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("| `"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_the_readme_table_lists_every_setting_with_its_default_and_valid_values():
    table = _readme_table()
    declared = {s.name: s for s in settings()}
    assert set(table) - {"DAGSTER_HOME"} == set(declared)
    here = str(data_dir())
    for name, setting in declared.items():
        _, _, default, valid = table[name]
        assert valid == setting.valid, name
        shown = re.match(r"`([^`]*)`", default)
        if shown:  # a literal default; others are described ("the sample CRM's")
            assert shown.group(1) == setting.default.replace(here, "data"), name


def test_the_yaml_schema_is_the_config_model():
    sections = {
        "crm": component.CrmSettings,
        "erzycall": component.ErzyCallSettings,
        "state": component.StateSettings,
        "schedule": component.ScheduleSettings,
        "reconcile": component.ReconcileSettings,
        "removal": component.RemovalSettings,
        "policy": component.PolicySettings,
    }
    seen = set()
    for field, opt in options():
        if opt.yaml is None or "." not in opt.yaml:
            continue
        section, key = opt.yaml.split(".")
        model_field = sections[section].model_fields[key]
        assert model_field.is_required() == opt.yaml_required, opt.yaml
        if not opt.yaml_required:
            assert model_field.default == field.default, opt.yaml
        seen.add((section, key))
    every = {(s, k) for s, model in sections.items() for k in model.model_fields}
    assert every == seen  # no YAML key that the model does not declare


def test_the_resources_take_their_defaults_from_the_config_model():
    for name, info in SyncPolicyResource.model_fields.items():
        assert info.default == getattr(DEFAULTS, name), name
    for name in ("base_url", "rate_limits", "allow_insecure_http", "timeout_seconds"):
        assert ErzyCallResource.model_fields[name].default == getattr(DEFAULTS, name), name


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ERZY_MAX_DELETION_SHARE", "3", "0 to 1"),
        ("ERZY_MAX_REQUESTS_PER_RUN", "-5", "0 or more"),
        ("ERZY_MAX_RUN_SECONDS", "-1", "0 or more"),
        ("ERZY_REJECT_RATE_WARN", "7", "0 to 1"),
        ("ERZY_DEFAULT_REGION", "XX", "region"),
        ("ERZY_OWNERSHIP", "mine", "merge, replace"),
        ("ERZYCALL_RATE_LIMITS", "0/60", "requests >= 1"),
        ("ERZY_LEASE_SECONDS", "10", "at least twice ERZYCALL_TIMEOUT_SECONDS"),
    ],
)
def test_an_environment_error_names_the_variable(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingError) as caught:
        env_sync_config()
    assert str(caught.value).startswith(variable)
    assert says in str(caught.value)


def test_a_python_or_yaml_error_names_the_yaml_key():
    with pytest.raises(ValueError, match=r"^removal\.max_share: 3 must be 0 to 1"):
        SyncConfig(max_deletion_share=3).validate()
    with pytest.raises(ValueError, match=r"^policy\.lease_seconds=10 must be at least twice"):
        SyncConfig(lease_seconds=10).validate("yaml")


def test_the_environment_sync_holds_names_of_variables_never_secrets(monkeypatch):
    monkeypatch.setenv("CRM_DATABASE_URL", "postgresql://u:secret@db/crm")
    config = env_sync_config()
    assert config.crm_url_env == "CRM_DATABASE_URL"
    assert "secret" not in repr(config)
