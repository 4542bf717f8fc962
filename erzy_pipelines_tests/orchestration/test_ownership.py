"""Edits made in ErzyCall survive: the sync owns only what it sends (ERZY_OWNERSHIP=merge, the
default), and the CRM is the only source of truth when asked (ERZY_OWNERSHIP=replace)."""

from __future__ import annotations

import json

import pytest

from erzy_pipelines.erzycall import ErzyCallClient
from erzy_pipelines.sandbox import DEMO_API_KEY
from erzy_pipelines_tests.orchestration.conftest import SyncHarness, person

PHONE = "+14155551001"  # person(1)


def _dashboard(h: SyncHarness, fields: dict, key: str) -> None:
    """An agent edits the contact in the ErzyCall dashboard."""
    contact = h.remote_by_phone()[PHONE]
    with ErzyCallClient(api_key=DEMO_API_KEY, base_url=h.sandbox.base_url) as client:
        client.update_contact(contact["id"], fields, key)


def _agent_work(h: SyncHarness) -> None:
    remote = h.remote_by_phone()[PHONE]
    _dashboard(
        h,
        {
            "tags": [*remote["tags"], "callback"],
            "groupIds": [*remote["groupIds"], "grp_events"],  # a dashboard-only campaign group
            "customFields": {**remote["customFields"], "agent_note": "call after 5pm"},
        },
        "agent-1",
    )


def test_tags_groups_and_custom_fields_added_in_erzycall_survive_crm_changes(harness):
    h = harness
    h.add_people([person(1, tags="customer")])
    h.add_memberships([(1, "vip")])
    assert h.sync()[0] == 0
    _agent_work(h)

    h.update_person(1, tags="customer,premium", company="Acme Ltd")
    h.add_memberships([(1, "newsletter")])
    code, summaries = h.sync(dry_run=True)
    assert code == 0 and h.run_totals()["requests_needed"] == 2  # read, then write
    code, summaries = h.sync()
    assert code == 0 and summaries[0]["requests"] == 2
    assert [r.method for r in h.requests_since_sync()] == ["GET", "PATCH"]
    contact = h.remote_by_phone()[PHONE]
    assert contact["tags"] == ["customer", "premium", "callback"]
    assert sorted(contact["groupIds"]) == ["grp_events", "grp_newsletter", "grp_vip"]
    assert contact["customFields"] == {"company": "Acme Ltd", "agent_note": "call after 5pm"}

    h.update_person(1, tags="customer")  # the sync removes what it sent, and only that
    h.remove_membership(1, "vip")
    assert h.sync()[0] == 0
    contact = h.remote_by_phone()[PHONE]
    assert contact["tags"] == ["customer", "callback"]
    assert sorted(contact["groupIds"]) == ["grp_events", "grp_newsletter"]

    h.update_person(1, full_name="Renamed")  # no list changes: no read
    assert h.sync()[1][0]["requests"] == 1
    assert [r.method for r in h.requests_since_sync()] == ["PATCH"]
    assert h.sync()[1][0]["requests"] == 0


def test_adopting_an_existing_contact_keeps_its_dashboard_values(harness):
    h = harness
    h.sandbox.add_contact_direct(
        {
            "title": "Made by hand",
            "phone": PHONE,
            "email": "agent.entered@example.com",
            "tags": ["callback"],
            "customFields": {"agent_note": "VIP caller"},
        }
    )
    h.add_people([person(1, email=None, tags="customer")])
    assert h.sync()[0] == 0
    contact = h.remote_by_phone()[PHONE]
    assert contact["title"] == "Person 1"
    assert contact["email"] == "agent.entered@example.com", "a CRM NULL cleared a dashboard value"
    assert contact["tags"] == ["customer", "callback"]
    assert contact["customFields"] == {"agent_note": "VIP caller", "company": "Acme"}
    assert h.sync()[1][0]["requests"] == 0


def test_a_crm_null_never_clears_a_value_the_sync_never_set(harness):
    h = harness
    h.add_people([person(1, email=None, notes=None)])
    assert h.sync()[0] == 0
    _dashboard(h, {"email": "agent@example.com", "notes": "prefers mornings"}, "agent-2")
    h.update_person(1, full_name="Renamed")
    assert h.sync()[0] == 0
    (patch,) = h.writes_since_sync()
    assert json.loads(patch.body) == {"title": "Renamed"}
    contact = h.remote_by_phone()[PHONE]
    assert (contact["email"], contact["notes"]) == ("agent@example.com", "prefers mornings")


def test_replace_mode_makes_the_crm_the_only_source_of_truth(harness, monkeypatch):
    monkeypatch.setenv("ERZY_OWNERSHIP", "replace")
    h = harness
    h.add_people([person(1, tags="customer")])
    h.add_memberships([(1, "vip")])
    assert h.sync()[0] == 0
    _agent_work(h)
    h.update_person(1, tags="customer,premium")
    h.add_memberships([(1, "newsletter")])
    code, summaries = h.sync()
    assert code == 0 and summaries[0]["requests"] == 1  # no read: the CRM's lists as they are
    contact = h.remote_by_phone()[PHONE]
    assert contact["tags"] == ["customer", "premium"]
    assert sorted(contact["groupIds"]) == ["grp_newsletter", "grp_vip"]


def test_an_unknown_ownership_mode_is_refused_naming_the_variable(harness, monkeypatch, capsys):
    from erzy_pipelines import cli

    monkeypatch.setenv("ERZY_OWNERSHIP", "mine")
    monkeypatch.setenv("DAGSTER_HOME", str(harness.tmp_path / "home"))
    assert cli.main(["sync"]) == 2
    assert "ERZY_OWNERSHIP: 'mine' is not one of: merge, replace" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_a_full_resync_repairs_drift_in_what_the_sync_owns_only(harness, monkeypatch, mode):
    monkeypatch.setenv("ERZY_OWNERSHIP", mode)
    h = harness
    h.add_people([person(1, tags="customer,vip-tier")])
    assert h.sync()[0] == 0
    # An agent removes a CRM tag and adds one of their own.
    _dashboard(h, {"tags": ["customer", "callback"]}, "agent-3")
    assert h.sync(full_resync=True)[0] == 0
    tags = h.remote_by_phone()[PHONE]["tags"]
    expected = ["customer", "vip-tier", "callback"] if mode == "merge" else ["customer", "vip-tier"]
    assert tags == expected
    assert h.sync(full_resync=True)[1][0]["requests"] == 1  # the listing only: no drift left
