"""A contact is settled by the write that sends it, and stays settled while its CRM input does not
change (README "Work in proportion to change"), through the real sync: Dagster, the sandbox over
HTTP, a SQLite CRM and state.

Settled means ``erzy_contacts.source_fp`` equals the fingerprint of the contact's CRM records: the
next run neither loads nor dedupes nor plans it.
"""

from __future__ import annotations

from erzy_pipelines_tests.orchestration.conftest import MEMBERSHIPS_SQL, person

N = 6


def _crm(harness) -> None:
    harness.add_people(person(i) for i in range(1, N + 1))
    harness.add_people([person(N + 1, phone=person(1)["phone"], full_name="Dup of one")])
    harness.add_memberships([(1, "vip"), (1, "newsletter"), (2, "vip"), (2, "trial"),
                             (3, "newsletter")])


def test_a_first_real_run_settles_every_contact_it_sends(harness):
    _crm(harness)
    code, summaries = harness.sync()
    assert code == 0, summaries
    assert summaries[0]["created"] == N
    sent = set(harness.remote_by_phone())
    assert len(sent) == N
    # Each confirmed write stored the fingerprint its payload was made from.
    assert set(harness.state().settled_fingerprints()) == sent

    code, summaries = harness.sync()
    assert code == 0, summaries
    totals = harness.run_totals()
    assert totals["records_normalized"] == 0
    assert totals["contacts"] == N
    assert totals["contacts_settled"] == N  # none loaded, deduped again or planned
    assert harness.requests_since_sync() == []


def test_memberships_in_another_row_order_change_no_fingerprint(harness):
    _crm(harness)
    sql = harness.tmp_path / "memberships.sql"
    base = MEMBERSHIPS_SQL
    sql.write_text(f"{base} ORDER BY person_id, group_key")
    assert harness.sync()[0] == 0
    assert harness.sync()[0] == 0  # settles whatever the first run left unsettled

    sql.write_text(f"{base} ORDER BY person_id DESC, group_key DESC")
    code, summaries = harness.sync()
    assert code == 0, summaries
    totals = harness.run_totals()
    assert totals["records_normalized"] == 0
    assert totals["contacts_settled"] == N
    assert harness.requests_since_sync() == []
