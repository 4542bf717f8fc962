"""The normalizing worker processes: real processes, real pipes."""

from __future__ import annotations

import pytest

from erzy_pipelines.core.normalize import Contact, Reject, normalize_row
from erzy_pipelines.sync.workers import WorkerPool, decode, normalize_items

COLS = ["crm_id", "phone", "title"]
ROWS = [
    (("1", "+1 415 555 2671", "Ada"), "1", (("vip", "grp_vip"),)),
    ((2, "not a phone", "Bob"), "2", ()),
]


def test_a_worker_answers_what_the_run_would_compute_itself():
    pool = WorkerPool(2)
    try:
        futures = [pool.submit(COLS, ROWS, "US") for _ in range(4)]
        answers = [f.result(timeout=30) for f in futures]
    finally:
        pool.shutdown()
    here = [decode(e, {}) for e in normalize_items(COLS, ROWS, "US")]
    assert all([decode(e, {}) for e in answer] == here for answer in answers)
    decoded = [decode(e, {}) for e in answers[0]]
    assert [type(r) for r in decoded] == [Contact, Reject]
    # What comes back is what normalizing the row dicts gives.
    assert decoded[0] == normalize_row(
        {"crm_id": "1", "phone": "+1 415 555 2671", "title": "Ada", "group_keys": ["vip"],
         "group_ids": ["grp_vip"]},
        "US",
    )
    assert decoded[1] == normalize_row(
        {"crm_id": "2", "phone": "not a phone", "title": "Bob", "group_keys": [],
         "group_ids": []},
        "US",
    )


def test_a_worker_that_dies_fails_its_chunk_with_a_clear_error_and_shutdown_ends_the_rest():
    pool = WorkerPool(1)
    procs = list(pool._procs)
    procs[0].kill()
    procs[0].wait()
    with pytest.raises(RuntimeError, match="normalizing worker process ended unexpectedly"):
        pool.submit(COLS, ROWS, "US").result(timeout=30)
    pool.shutdown()
    assert all(proc.returncode is not None for proc in procs)


def test_shutdown_without_waiting_kills_busy_workers():
    pool = WorkerPool(2)
    pool.submit(COLS, ROWS * 20_000, "US")  # busy for a while
    pool.shutdown(wait=False)
    assert all(proc.returncode is not None for proc in pool._procs)
