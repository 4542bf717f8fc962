"""`erzy-pipelines baseline`: a state started from what ErzyCall already holds, in one listing.

The sandbox is filled by "another tool" (the API client, directly) before the sync ever runs:
four contacts exactly as the sync would send them, one with another title, one CRM person
missing, and one contact that is not in the CRM. Then the baseline, then a real sync.
"""

from __future__ import annotations

import json

from erzy_pipelines import cli
from erzy_pipelines.core.payload import create_body, to_payload
from erzy_pipelines.core.scope import SyncScope
from erzy_pipelines.crm.extract import create_crm_engine, iter_contact_chunks, load_memberships
from erzy_pipelines.erzycall import ErzyCallClient
from erzy_pipelines.sandbox import DEMO_API_KEY
from erzy_pipelines.sync.stop import StopSignal
from erzy_pipelines_tests.orchestration.conftest import CONTACTS_SQL, MEMBERSHIPS_SQL, person
from erzy_pipelines_tests.reference import extract, prepare


def _what_the_sync_sends(h) -> dict[str, dict]:
    engine = create_crm_engine(h.crm_url)
    memberships = load_memberships(engine, MEMBERSHIPS_SQL)
    rows = extract(
        memberships=memberships,
        contact_chunks=lambda check: iter_contact_chunks(
            engine, CONTACTS_SQL, None, memberships=memberships, between_fetches=check
        ),
        scope=SyncScope(None, True),
        last_sent_with=lambda _ids: set(),
        region="US",
        stop=StopSignal(),
    )
    contacts = prepare(rows, "US", StopSignal()).contacts
    return {c.phone: create_body(to_payload(c)) for c in contacts}


def test_a_baseline_records_what_erzycall_holds_so_the_first_sync_sends_only_the_difference(
    harness, capsys
):
    h = harness
    h.add_people(person(i) for i in range(1, 7))
    h.add_memberships([(1, "vip"), (2, "newsletter")])
    bodies = _what_the_sync_sends(h)
    phones = sorted(bodies)
    with ErzyCallClient(api_key=DEMO_API_KEY, base_url=h.sandbox.base_url) as other_tool:
        for n, phone in enumerate(phones[:5]):
            body = dict(bodies[phone])
            if n == 4:
                body["title"] = "Typed differently in the old tool"
            other_tool.create_contact(body, f"old-tool-{n}")
        other_tool.create_contact({"title": "Not in the CRM", "phone": "+14155559999"}, "old-x")
    mark = len(h.sandbox.request_log)

    assert cli.main(["baseline"]) == 0
    out = capsys.readouterr().out
    assert "6 contacts listed in 1 requests" in out
    assert "4 hold what the sync would send (settled), 1 differ" in out
    assert "1 are not in ErzyCall" in out and "1 ErzyCall contacts are not in the CRM" in out
    spent = h.sandbox.request_log[mark:]
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in spent] == [("GET", "contacts")]

    code, summaries = h.sync()
    assert code == 0
    writes = h.writes_since_sync()
    assert sorted(w.method for w in writes) == ["PATCH", "POST"]  # no 409, no adoption
    assert {json.loads(w.body)["phone"] for w in writes if w.method == "POST"} == {phones[5]}
    patch = next(w for w in writes if w.method == "PATCH")
    assert json.loads(patch.body) == {"title": bodies[phones[4]]["title"]}
    assert summaries[0]["unchanged"] == 4
    assert h.sync()[1][0]["requests"] == 0

    # A second baseline leaves the state alone: everything is known now.
    assert cli.main(["baseline"]) == 0
    assert "6 were already in the state (left alone)" in capsys.readouterr().out
    assert h.sync()[1][0]["requests"] == 0
