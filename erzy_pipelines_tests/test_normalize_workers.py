"""The normalizing worker processes: real processes, real pipes."""

from __future__ import annotations

import pytest

from erzy_pipelines.core.normalize import Contact, Reject
from erzy_pipelines.normalize_workers import WorkerPool, normalize_chunk

ROWS = [
    {"crm_id": "1", "phone": "+1 415 555 2671", "title": "Ada"},
    {"crm_id": "2", "phone": "not a phone", "title": "Bob"},
]


def test_a_worker_answers_what_the_run_would_compute_itself():
    pool = WorkerPool(2)
    try:
        futures = [pool.submit(ROWS, "US") for _ in range(4)]
        answers = [f.result(timeout=30) for f in futures]
    finally:
        pool.shutdown()
    assert all(answer == normalize_chunk(ROWS, "US") for answer in answers)
    assert [type(r) for r in answers[0]] == [Contact, Reject]


def test_a_worker_that_dies_fails_its_chunk_with_a_clear_error_and_shutdown_ends_the_rest():
    pool = WorkerPool(1)
    procs = list(pool._procs)
    procs[0].kill()
    procs[0].wait()
    with pytest.raises(RuntimeError, match="normalizing worker process ended unexpectedly"):
        pool.submit(ROWS, "US").result(timeout=30)
    pool.shutdown()
    assert all(proc.returncode is not None for proc in procs)


def test_shutdown_without_waiting_kills_busy_workers():
    pool = WorkerPool(2)
    pool.submit(ROWS * 20_000, "US")  # busy for a while
    pool.shutdown(wait=False)
    assert all(proc.returncode is not None for proc in pool._procs)
