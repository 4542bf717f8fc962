"""Opt-in removal of what the sync created: the real sync against the sandbox over HTTP, one
state database and one Dagster instance kept across runs."""

from __future__ import annotations

from erzy_pipelines_tests.orchestration.conftest import people, person

N = 60


def _phone(i: int) -> str:
    return f"+1415555{1000 + i:04d}"  # person(i)'s phone in E.164


def remove_people(h, ids) -> None:
    with h.engine.begin() as conn:
        conn.execute(people.delete().where(people.c.id.in_(list(ids))))


def setup(h, monkeypatch, **settings: str):
    """N people in the CRM, two of them (1, 2) already in ErzyCall before the first sync
    (adopted, not created by the sync); removal on with the given guards."""
    monkeypatch.setenv("ERZY_DELETE_REMOVED", "true")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for i in (1, 2):
        h.sandbox.add_contact_direct({"phone": _phone(i), "title": f"Person {i} (by hand)"})
    h.add_people(person(i) for i in range(1, N + 1))
    assert h.sync()[0] == 0
    assert len(h.remote_by_phone()) == N


def audit(h, action: str) -> list[dict]:
    return [r for r in h.state().audit_rows(h.last_run_id()) if r["action"] == action]


def test_removal_is_off_by_default(harness):
    h = harness
    h.add_people(person(i) for i in range(1, N + 1))
    assert h.sync()[0] == 0
    remove_people(h, [5, 6])
    assert h.sync()[0] == 0
    assert h.writes_since_sync() == [] and len(h.remote_by_phone()) == N


def test_removal_deletes_only_created_contacts_after_listing_them_in_the_dry_run(
    harness, monkeypatch
):
    h = harness
    # 58 created (2 adopted): 10% of them is 5.8; 4 of 60 records gone is under 10% too
    setup(h, monkeypatch, ERZY_MAX_DELETION_SHARE="0.1")
    remove_people(h, [1, 5, 6, 7])  # 1 was adopted: never deleted

    code, [plan] = h.sync(dry_run=True)
    assert code == 0 and h.requests_since_sync() == []
    planned = audit(h, "delete")
    assert sorted((r["phone"], r["crm_ids"], r["outcome"]) for r in planned) == [
        (_phone(i), str(i), "planned") for i in (5, 6, 7)
    ]
    totals = h.run_totals()
    assert totals["deletions"] == 3 and totals["requests_needed"] == 3
    assert all(f"| {i} |" in totals["deletions_list"] for i in (5, 6, 7))  # CRM ids

    code, [summary] = h.sync()
    assert code == 0 and summary["deleted"] == 3 and summary["requests"] == 3
    assert [r.method for r in h.writes_since_sync()] == ["DELETE"] * 3
    remote = h.remote_by_phone()
    assert set(remote) == {_phone(i) for i in range(1, N + 1)} - {_phone(i) for i in (5, 6, 7)}
    deleted = audit(h, "delete")
    assert sorted((r["crm_ids"], r["outcome"]) for r in deleted) == [
        ("5", "deleted"), ("6", "deleted"), ("7", "deleted")
    ]
    assert h.sync()[0] == 0 and h.requests_since_sync() == []  # nothing left to do

    h.add_people([person(5)])  # the record comes back: the contact is created again
    assert h.sync()[0] == 0
    assert [r.method for r in h.writes_since_sync()] == ["POST"]


def test_more_deletions_than_allowed_per_run_deletes_nothing_and_fails_the_check(
    harness, monkeypatch
):
    h = harness
    setup(h, monkeypatch, ERZY_MAX_DELETIONS_PER_RUN="2", ERZY_MAX_DELETION_SHARE="0.1")
    remove_people(h, [10, 11, 12])
    code, [summary] = h.sync()
    assert summary["deleted"] == 0 and h.writes_since_sync() == []
    check = _check(h, "deletions_within_guards")
    assert check.passed is False
    assert "3 contacts" in check.description and "more than the 2" in check.description
    assert "nothing was deleted" in h.run_totals()["removal_refused"]

    monkeypatch.setenv("ERZY_MAX_DELETIONS_PER_RUN", "3")  # raised: now they go
    assert h.sync()[1][0]["deleted"] == 3
    assert _check(h, "deletions_within_guards").passed is True


def test_a_share_above_the_guard_deletes_nothing(harness, monkeypatch):
    h = harness
    setup(h, monkeypatch)  # 58 created (2 adopted): 5% is 2.9
    remove_people(h, [20, 21, 22])
    code, [summary] = h.sync()
    assert summary["deleted"] == 0 and h.writes_since_sync() == []
    check = _check(h, "deletions_within_guards")
    assert check.passed is False and "5%" in check.description


def test_a_group_run_never_deletes(harness, monkeypatch):
    h = harness
    h.add_memberships([(i, "vip") for i in range(1, 11)])
    setup(h, monkeypatch)
    remove_people(h, [3, 30])
    assert h.sync(["vip"])[0] == 0
    assert [r.method for r in h.writes_since_sync()] == []
    assert h.sync()[1][0]["deleted"] == 2  # the next full run does


def _check(h, name: str):
    records = h.instance.get_records_for_run(h.last_run_id()).records
    found = [
        r.event_log_entry.dagster_event.event_specific_data
        for r in records
        if r.event_log_entry.dagster_event is not None
        and r.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    (check,) = [c for c in found if c.check_name == name]
    return check


def test_removal_settings_are_checked():
    from erzy_pipelines.orchestration.factory import ConfigError, SyncConfig

    for bad in (dict(max_deletion_share=5.0), dict(max_deletions_per_run=-1)):
        try:
            SyncConfig(**bad).validate()
        except ConfigError as exc:
            assert "removal.max_" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")


def test_a_contact_adopted_in_place_of_one_the_sync_created_is_never_deleted(
    harness, monkeypatch
):
    """The sync created it; someone deleted it in ErzyCall and created the phone again by hand;
    the sync's next write meets 404, its recreate 409, and it adopts the hand-made contact.
    That contact is not the sync's to delete."""
    h = harness
    setup(h, monkeypatch)
    h.sandbox.app.store.delete(h.remote_by_phone()[_phone(9)]["id"])
    h.sandbox.add_contact_direct({"phone": _phone(9), "title": "Made by hand"})
    h.update_person(9, full_name="Nine, renamed")
    assert h.sync()[0] == 0
    assert h.state().state_row(_phone(9))["created_by_sync"] is False

    remove_people(h, [9, 10])
    code, [summary] = h.sync()
    assert summary["deleted"] == 1  # 10, which the sync did create
    remote = h.remote_by_phone()
    assert _phone(9) in remote and _phone(10) not in remote


def test_a_contact_written_after_the_run_began_reading_the_crm_is_left_for_the_next_run(
    harness, monkeypatch
):
    import datetime as dt

    h = harness
    setup(h, monkeypatch)
    store = h.state()
    assert len(list(store.created_contacts())) == N - 2
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    assert list(store.created_contacts(before=long_ago)) == []  # all written since


def test_an_emptied_crm_deletes_nothing_even_when_most_contacts_were_adopted(
    harness, monkeypatch
):
    """ErzyCall already held most of the CRM's phones (another tool filled it): the sync adopted
    those and created a few. The CRM's tables are then emptied: a read of 0 rows is a broken
    read, not 'every contact left', and the few created contacts are all of what the sync
    created, not a small share of what it holds. Nothing is deleted and the check fails."""
    h = harness
    monkeypatch.setenv("ERZY_DELETE_REMOVED", "true")
    for i in range(1, 98):
        h.sandbox.add_contact_direct({"phone": _phone(i), "title": f"Person {i} (other tool)"})
    h.add_people(person(i) for i in range(1, 101))
    code, [summary] = h.sync()
    assert code == 0 and summary["created"] == 3 and summary["updated"] == 97
    with h.engine.begin() as conn:
        conn.execute(people.delete())
    code, [summary] = h.sync()
    assert code == 0 and summary["deleted"] == 0 and h.writes_since_sync() == []
    check = _check(h, "deletions_within_guards")
    assert check.passed is False and "no record at all" in check.description
    assert len(h.remote_by_phone()) == 100


def test_a_read_far_smaller_than_the_last_deletes_nothing_until_the_share_is_raised(
    harness, monkeypatch
):
    """A contacts query that suddenly returns a third fewer rows (a broken join, a filter) is
    taken as broken: nothing is deleted, and a read that stays broken never becomes the
    yardstick. Raising the share for one run lets a real mass departure through."""
    h = harness
    setup(h, monkeypatch, ERZY_MAX_DELETION_SHARE="0.5")
    remove_people(h, range(41, N + 1))  # 20 of 60 gone: within 50% of the created, a collapse
    monkeypatch.setenv("ERZY_MAX_DELETION_SHARE", "0.3")
    for _ in range(2):  # the next run compares with the last good read too
        code, [summary] = h.sync()
        assert code == 0 and summary["deleted"] == 0 and h.writes_since_sync() == []
        check = _check(h, "deletions_within_guards")
        assert check.passed is False
        assert "20 fewer than the 60 of the last read" in check.description
    monkeypatch.setenv("ERZY_MAX_DELETION_SHARE", "0.5")
    code, [summary] = h.sync()
    assert code == 0 and summary["deleted"] == 20
