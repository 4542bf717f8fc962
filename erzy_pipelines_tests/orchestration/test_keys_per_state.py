"""Idempotency keys are unique to the state that issued them (issue 17, item 2)."""

from __future__ import annotations

import os

from erzy_pipelines_tests.orchestration.conftest import person


def test_a_second_state_on_the_same_key_adopts_instead_of_replaying(harness, tmp_path):
    """A second deployment (its own state database, same key and organization) must not send the
    first one's keys: its creates meet 409 and adopt, so it records nothing as created by itself
    and its removal can never delete the first deployment's contacts."""
    h = harness
    h.add_people([person(i) for i in range(1, 6)])
    assert h.sync()[0] == 0
    first_keys = {r.idempotency_key for r in h.writes_since_sync()}
    assert len(first_keys) == 5

    os.environ["ERZY_STATE_DATABASE_URL"] = h.state_url = f"sqlite:///{tmp_path / 'second.sqlite'}"
    code, summaries = h.sync()
    assert code == 0
    writes = h.writes_since_sync()
    assert not first_keys & {r.idempotency_key for r in writes}, "a key of the first state"
    assert [r.status for r in writes if r.method == "POST"] == [409] * 5
    assert summaries[0]["updated"] == 5 and summaries[0]["created"] == 0  # adopted
    with h.state() as store:
        rows = [store.state_row(p) for p in store.load_states()]
    assert rows and not any(row["created_by_sync"] for row in rows)
