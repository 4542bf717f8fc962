"""The weekly reconcile, launched the way its schedule launches it: one listing of ErzyCall,
then only the requests the drift needs, reported as ``drift_*`` counts."""

from __future__ import annotations

import datetime as dt
import json
import math

import dagster as dg
import sqlalchemy as sa

from erzy_pipelines.erzycall import ErzyCallClient
from erzy_pipelines.orchestration.definitions import build_definitions
from erzy_pipelines.sandbox import DEMO_API_KEY
from erzy_pipelines.state.schema import sync_runs
from erzy_pipelines_tests.orchestration.conftest import person

N = 120


def _phone(i: int) -> str:
    return f"+1415555{1000 + i:04d}"  # person(i)'s phone in E.164


def reconcile(h) -> str:
    """Evaluate the weekly schedule and run what it asks for; the run's id."""
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("weekly_erzycall_reconcile")
    assert schedule.cron_schedule == "0 3 * * 0" and schedule.execution_timezone == "UTC"
    sunday = dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(instance=h.instance, scheduled_execution_time=sunday)
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags["erzy/trigger"] == "weekly_reconcile"
    h._mark = len(h.sandbox.request_log)
    result = defs.resolve_job_def("erzycall_sync").execute_in_process(
        instance=h.instance, tags=request.tags, run_config=request.run_config
    )
    assert result.success
    return result.run_id


def run_row(h, run_id: str) -> dict:
    engine = sa.create_engine(h.state_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(sync_runs).where(sync_runs.c.run_id == run_id)).mappings()
        found = dict(row.one())
    engine.dispose()
    return found


def drift_by_hand(h) -> None:
    remote = h.remote_by_phone()
    with ErzyCallClient(api_key=DEMO_API_KEY, base_url=h.sandbox.base_url) as client:
        client.update_contact(remote[_phone(7)]["id"], {"title": "Edited by hand"}, "drift-1")
        client.delete_contact(remote[_phone(42)]["id"], idempotency_key="drift-2")


def persistent(h, tmp_path) -> None:
    """A DAGSTER_HOME on disk, as a deployment has (a schedule reads its instance from it)."""
    h.instance.dispose()
    (tmp_path / "dagster_home").mkdir()
    h.instance = dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home"))


def test_the_weekly_reconcile_repairs_a_deletion_and_an_edit_with_one_request_each(
    harness, tmp_path
):
    h = harness
    persistent(h, tmp_path)
    h.add_people(person(i) for i in range(1, N + 1))
    assert h.sync()[0] == 0
    drift_by_hand(h)
    assert h.sync()[0] == 0 and h.requests_since_sync() == []  # a daily run cannot see drift

    run_id = reconcile(h)
    requests = h.requests_since_sync()
    assert [r.method for r in requests if r.method == "GET"] == ["GET"] * math.ceil(N / 100)
    writes = sorted((r.method, json.loads(r.body)) for r in requests if r.method != "GET")
    assert [m for m, _ in writes] == ["PATCH", "POST"]
    assert writes[0][1] == {"title": person(7)["full_name"]}
    assert writes[1][1]["phone"] == _phone(42)
    remote = h.remote_by_phone()
    assert len(remote) == N and remote[_phone(7)]["title"] == person(7)["full_name"]

    totals = h.run_totals(run_id)
    assert (totals["drift_deleted"], totals["drift_edited"]) == (1, 1)
    row = run_row(h, run_id)
    assert (row["drift_deleted"], row["drift_edited"], row["requests"]) == (1, 1, 4)

    again = reconcile(h)  # nothing drifted since: the listing only
    assert [r.method for r in h.requests_since_sync()] == ["GET", "GET"]
    assert (h.run_totals(again)["drift_deleted"], h.run_totals(again)["drift_edited"]) == (0, 0)


def test_respect_leaves_a_contact_deleted_in_erzycall_until_its_crm_record_changes(
    harness, monkeypatch, tmp_path
):
    monkeypatch.setenv("ERZY_DELETED_IN_ERZYCALL", "respect")
    h = harness
    persistent(h, tmp_path)
    h.add_people(person(i) for i in range(1, N + 1))
    assert h.sync()[0] == 0
    drift_by_hand(h)

    run_id = reconcile(h)
    writes = [r.method for r in h.requests_since_sync() if r.method != "GET"]
    assert writes == ["PATCH"]  # the edit is repaired, the deletion respected
    assert _phone(42) not in h.remote_by_phone()
    assert (h.run_totals(run_id)["drift_deleted"], h.run_totals(run_id)["drift_edited"]) == (0, 1)
    assert h.sync()[0] == 0 and h.requests_since_sync() == []  # stays deleted

    h.update_person(42, full_name="Renamed in the CRM")
    assert h.sync()[0] == 0
    assert h.remote_by_phone()[_phone(42)]["title"] == "Renamed in the CRM"  # back, changed
    assert len(h.remote_by_phone()) == N


def test_a_tag_added_after_the_listing_survives_the_reconciles_patch(harness, monkeypatch):
    """The reconcile lists ErzyCall, then PATCHes a contact whose CRM tags changed; an agent tags
    that contact in between (the listing can be hours old when a big reconcile reaches it). The
    PATCH replaces the tag list whole, so it must be merged against a fresh read, not the
    listing: the agent's tag survives."""
    h = harness
    h.add_people([person(1, tags="customer")])
    assert h.sync()[0] == 0
    h.update_person(1, tags="customer,vip")
    listing = ErzyCallClient.list_contacts

    def listing_then_an_agent_tags(client, *args, **kwargs):
        listed = list(listing(client, *args, **kwargs))
        (contact,) = h.sandbox.contacts()
        h.sandbox.app.store.update(contact["id"], {"tags": [*contact["tags"], "callback"]})
        return iter(listed)

    monkeypatch.setattr(ErzyCallClient, "list_contacts", listing_then_an_agent_tags)
    code, summaries = h.sync(full_resync=True)
    assert code == 0 and summaries[0]["updated"] == 1
    (contact,) = h.sandbox.contacts()
    assert contact["tags"] == ["customer", "vip", "callback"]
    methods = [r.method for r in h.requests_since_sync()]
    assert methods == ["GET", "GET", "PATCH"]  # the listing, the read before the PATCH, the PATCH
