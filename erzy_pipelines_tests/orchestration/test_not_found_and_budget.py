"""404 means deleted only when the API says so; an exhausted key budget is not an outage; the
smaller state bugs (rejected payloads on a full resync, a refused idempotency key)."""

from __future__ import annotations

import json

import pytest

from erzy_pipelines.erzycall import client as client_module
from erzy_pipelines.erzycall.retry import RetryPolicy
from erzy_pipelines.sandbox import SandboxConfig, SandboxServer
from erzy_pipelines_tests.orchestration.conftest import SyncHarness, people_groups, person
from erzy_pipelines_tests.orchestration.proxy import HTML_404, Proxy


@pytest.fixture
def proxied(harness: SyncHarness, monkeypatch):
    """The harness, talking to the sandbox through a proxy it can make misbehave."""
    proxy = Proxy(harness.sandbox.base_url)
    monkeypatch.setenv("ERZYCALL_BASE_URL", proxy.base_url)
    monkeypatch.setattr(client_module, "RetryPolicy", lambda: RetryPolicy(base_delay=0.01))
    yield harness, proxy
    proxy.stop()


def _remote_ids(h: SyncHarness) -> dict[str, str | None]:
    with h.state() as store:
        ids = {phone: state.remote_id for phone, state in store.load_states().items()}
    assert ids and all(ids.values()), "the state the sync keeps for this account is not there"
    return ids


def test_a_404_page_from_a_proxy_deletes_nothing_and_three_in_a_row_stop_the_run(
    proxied, capsys
):
    h, proxy = proxied
    h.add_people(person(i) for i in range(1, 6))
    assert h.sync()[0] == 0
    ids = _remote_ids(h)
    for i in range(1, 6):
        h.update_person(i, full_name=f"Renamed {i}")
    proxy.answer = lambda method, path: HTML_404 if method == "PATCH" else None

    code, summaries = h.sync()
    assert code == 1
    sent = [(m, s) for m, p, s in proxy.answered[-3:]]
    assert sent == [("PATCH", 404)] * 3, "three PATCHes, no recreate, then the run stopped"
    assert summaries[0]["failed"] == 3 and summaries[0]["deferred"] == 2
    assert "ERZYCALL_BASE_URL" in capsys.readouterr().err
    assert _remote_ids(h) == ids, "a 404 without the API's NOT_FOUND forgot a contact"
    assert len(h.sandbox.contacts()) == 5

    proxy.answer = None  # the proxy is fixed: the changes go out as PATCHes, nothing recreated
    code, summaries = h.sync()
    assert code == 0 and summaries[0]["updated"] == 5 and summaries[0]["created"] == 0
    assert _remote_ids(h) == ids
    assert h.sync()[1][0]["requests"] == 0


def test_a_deleted_contact_keeps_its_old_id_until_it_is_recreated(proxied):
    h, proxy = proxied
    h.add_people(person(i) for i in range(1, 4))
    assert h.sync()[0] == 0
    ids = _remote_ids(h)
    phone = "+14155551001"
    h.sandbox.app.store.delete(ids[phone])  # deleted in ErzyCall by hand
    h.update_person(1, full_name="Renamed")
    server_error = (503, "application/json", b'{"error":{"code":"UNAVAILABLE","message":"x"}}')
    proxy.answer = lambda method, path: server_error if method == "POST" else None

    code, _ = h.sync()
    assert code == 1
    assert ("PATCH", f"/api/v1/contacts/{ids[phone]}", 404) in proxy.answered
    assert _remote_ids(h)[phone] == ids[phone], "the old id went before the recreate worked"

    proxy.answer = None
    code, summaries = h.sync()
    assert code == 0 and summaries[0]["created"] == 1
    new_id = _remote_ids(h)[phone]
    assert new_id != ids[phone] and h.remote_by_phone()[phone]["id"] == new_id
    assert h.sync()[1][0]["requests"] == 0


def test_a_spent_key_budget_defers_the_rest_and_says_when_it_frees(
    harness_factory, sqlite_url, monkeypatch, capsys
):
    """Another client spent the key's hour: the API answers 429 with a long Retry-After. The
    run is not failed as "API down": it defers the rest and says when the budget frees."""
    sandbox = SandboxServer(SandboxConfig(limits=((4, 3600.0),))).start()
    try:
        h = harness_factory(sqlite_url)
        monkeypatch.setenv("ERZYCALL_BASE_URL", sandbox.base_url)
        h.sandbox = sandbox
        h.add_people(person(i) for i in range(1, 9))
        code, summaries = h.sync()
        assert code == 0, "an exhausted budget is not a failure"
        created, deferred = summaries[0]["created"], summaries[0]["deferred"]
        # The API's headers tell the budget is (nearly) spent before its 429 does: the run may
        # stop one request early rather than spend the last one.
        assert created >= 3 and created + deferred == 8 and summaries[0]["failed"] == 0
        totals = h.run_totals()
        assert 60 < totals["key_budget_frees_in_seconds"] <= 3600
        logs = capsys.readouterr().err
        assert "request budget is spent" in logs and "This is not an outage" in logs
        assert "in 0 min 0 s" not in logs and "in 0s" not in logs
        assert summaries[0]["status"] == "deferred", "a run that deferred work never says ok"
        note = f"{deferred} contact(s) deferred ({deferred} for the API key's request budget"
        assert note in logs
        with h.state() as store:
            audit = store.audit_rows(run_id=h.last_run_id())
        assert {r["error_code"] for r in audit if r["outcome"] == "deferred"} == {
            "key_budget_spent"
        }
    finally:
        sandbox.stop()


def test_a_burst_of_429s_within_the_wait_budget_is_waited_out(harness):
    """Seven 429s in a row with Retry-After: 1 (more than the six attempts a failing request
    gets): the API said when to come back, and it was soon. Every contact is created, nothing
    is deferred and the run is plainly ok."""
    h = harness
    h.add_people(person(i) for i in range(1, 4))
    h.sandbox.faults.burst_429 = 7
    code, summaries = h.sync()
    assert code == 0 and summaries[0]["status"] == "ok"
    assert summaries[0]["created"] == 3 and summaries[0]["deferred"] == 0
    assert [r.status for r in h.requests_since_sync()].count(429) == 7


def test_a_capped_run_says_what_it_deferred_and_why(harness, capsys):
    """A run cut short by its request cap finished nothing wrong, but it did not finish: its
    status is `deferred`, in the summary and in erzy_sync_runs, with the reason."""
    h = harness
    h.add_people(person(i) for i in range(1, 5))
    code, summaries = h.sync(max_requests=1)
    assert code == 0 and summaries[0]["status"] == "deferred" and summaries[0]["deferred"] == 3
    assert "3 contact(s) deferred (3 for the run's request cap" in capsys.readouterr().err
    with h.state() as store:
        (run,) = [r for r in store.runs(limit=5) if r["run_id"] == h.last_run_id()]
    assert run["status"] == "deferred"
    code, summaries = h.sync()
    assert code == 0 and summaries[0]["status"] == "ok" and summaries[0]["created"] == 3


def test_a_full_resync_tries_a_rejected_payload_again(harness):
    h = harness
    h.add_people([person(1)])
    with h.engine.begin() as conn:  # a CRM group mapped to an ErzyCall group that is not there
        conn.execute(people_groups.insert(), [{"person_id": 1, "group_key": "ghost",
                                               "erzy_group": "grp_ghost"}])
    assert h.sync()[1][0]["failed"] == 1
    assert h.sync()[1][0]["requests"] == 0  # rejected before: not sent until it changes
    h.sync(full_resync=True)
    posts = [r for r in h.requests_since_sync() if r.method == "POST"]
    assert len(posts) == 1, "a full resync must try the rejected payload again"


def test_a_refused_idempotency_key_is_replaced_next_run(harness):
    """The API answers 409 IDEMPOTENCY_MISMATCH (the key was used with another body): the next
    run sends every field under a new key instead of repeating the refused one forever."""
    from erzy_pipelines.core.ownership import REPLACE
    from erzy_pipelines.core.payload import scoped_key
    from erzy_pipelines.core.plan import plan_operations
    from erzy_pipelines.erzycall import ErzyCallClient
    from erzy_pipelines.sandbox import DEMO_API_KEY
    from erzy_pipelines.sync.stop import StopSignal
    from erzy_pipelines_tests.reference import prepare

    h = harness
    h.add_people([person(1)])
    assert h.sync()[0] == 0
    h.update_person(1, full_name="Renamed")
    rows = [dict(person(1, full_name="Renamed"), crm_id="1", title="Renamed", group_keys=[],
                 group_ids=[], custom_company="Acme")]
    for row in rows:
        for column in ("id", "full_name", "company"):
            row.pop(column)
    with h.state() as store:
        contacts = prepare(rows, "US", StopSignal()).contacts
        (op,) = plan_operations(contacts, store.load_states(), REPLACE).operations
        key = scoped_key(op.idempotency_key, store.account)  # the key the next run sends
    with ErzyCallClient(api_key=DEMO_API_KEY, base_url=h.sandbox.base_url) as client:
        client.update_contact(op.remote_id, {"notes": "someone else's body"}, key)

    code, summaries = h.sync()
    assert code == 1 and summaries[0]["failed"] == 1
    (refused,) = h.writes_since_sync()
    assert refused.idempotency_key == key
    code, summaries = h.sync()
    assert code == 0 and summaries[0]["updated"] == 1
    (patch,) = h.writes_since_sync()
    assert patch.idempotency_key != key
    assert json.loads(patch.body)["title"] == "Renamed"
    assert h.sync()[1][0]["requests"] == 0
