"""The SQL rate-limit store: exact window arithmetic, and one budget shared by processes."""

from __future__ import annotations

import bisect
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from erzy_pipelines.core.key_id import key_id
from erzy_pipelines.state.rate_budget import SqlRateLimitStore

API_KEY = "ek_test_sandbox_demo_key_0001"
KEY_ID = key_id(API_KEY)


@dataclass(frozen=True)
class W:
    limit: int
    seconds: float


@pytest.fixture
def store(any_db_url: str) -> Iterator[SqlRateLimitStore]:
    s = SqlRateLimitStore(any_db_url, KEY_ID)
    yield s
    s.close()


def test_exactly_limit_slots_at_one_instant(store: SqlRateLimitStore) -> None:
    now = 1_700_000_000.25
    windows = (W(5, 1.0),)
    assert [store.try_acquire(now, windows) for _ in range(5)] == [0.0] * 5
    wait = store.try_acquire(now, windows)
    assert wait == pytest.approx(1.0)
    assert len(store.recorded()) == 5  # a refused attempt records nothing
    assert store.try_acquire(now + 0.5, windows) == pytest.approx(0.5)
    assert store.try_acquire(now + 1.0 + 1e-3, windows) == 0.0


def test_every_window_binds(store: SqlRateLimitStore) -> None:
    t0 = 1_700_000_000.0
    windows = (W(2, 1.0), W(3, 10.0))
    assert store.try_acquire(t0, windows) == 0.0
    assert store.try_acquire(t0 + 0.1, windows) == 0.0
    assert store.try_acquire(t0 + 0.2, windows) == pytest.approx(0.8)  # the 1 s window
    assert store.try_acquire(t0 + 1.05, windows) == 0.0
    assert store.try_acquire(t0 + 2.0, windows) == pytest.approx(8.0)  # the 10 s window


def test_keys_have_separate_budgets_and_old_events_are_pruned(any_db_url: str) -> None:
    a = SqlRateLimitStore(any_db_url, key_id("ek_test_a"))
    b = SqlRateLimitStore(any_db_url, key_id("ek_test_b"))
    try:
        windows = (W(1, 60.0),)
        assert a.try_acquire(1000.0, windows) == 0.0
        assert b.try_acquire(1000.0, windows) == 0.0
        assert a.try_acquire(1001.0, windows) == pytest.approx(59.0)
        assert a.try_acquire(1060.0, windows) == 0.0
        assert a.recorded() == [1060.0]  # the event at 1000.0 left the longest window
        assert b.recorded() == [1000.0]
    finally:
        a.close()
        b.close()


def test_key_id_never_holds_the_key(sqlite_url: str) -> None:
    assert API_KEY not in KEY_ID and len(KEY_ID) == 16
    with pytest.raises(ValueError, match="looks like an API key"):
        SqlRateLimitStore(sqlite_url, API_KEY)
    store = SqlRateLimitStore(sqlite_url, KEY_ID)
    assert API_KEY not in repr(store)
    store.close()


def _hammer(url: str, barrier: object, seconds: float, results: object) -> None:
    """Child process: take every slot it can for ``seconds``; report how many it got."""
    store = SqlRateLimitStore(url, KEY_ID)
    windows = (W(10, 1.0), W(100_000, 3600.0))  # the long window keeps events for checking
    barrier.wait()  # type: ignore[attr-defined]
    got = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        wait = store.try_acquire(time.time(), windows)
        if wait <= 0:
            got += 1
        else:
            time.sleep(min(wait, 0.01))  # retry eagerly to maximise contention
    store.close()
    results.put(got)  # type: ignore[attr-defined]


@pytest.mark.parametrize("db", ["sqlite_url", "pg_url", "mariadb_url"])
def test_two_processes_share_one_budget(db: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(db)
    SqlRateLimitStore(url, KEY_ID).close()  # create the tables before the race
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(url, barrier, 2.5, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    store = SqlRateLimitStore(url, KEY_ID)
    times = store.recorded()
    store.close()
    assert len(times) == sum(got)
    # The budget was actually used: 10 at once, 10 more a second later and again at 2 s (about
    # 30); 15 leaves room for a slow start on a loaded machine.
    assert len(times) >= 15
    busiest = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    assert busiest <= 10, f"{busiest} slots within one second"


def test_plugs_into_the_client_rate_limiter(sqlite_url: str) -> None:
    from erzy_pipelines.core.budget import RateWindow
    from erzy_pipelines.erzycall.ratelimit import RateLimiter, RateLimitStore

    store = SqlRateLimitStore(sqlite_url, KEY_ID)
    assert isinstance(store, RateLimitStore)
    limiter = RateLimiter(windows=(RateWindow(3, 30.0),), store=store, clock=time.time)
    assert [limiter.try_acquire() for _ in range(3)] == [0.0] * 3
    assert limiter.try_acquire() > 29.0
    assert len(store.recorded()) == 3
    store.close()
