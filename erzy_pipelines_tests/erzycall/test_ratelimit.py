"""The client-side limiter: both sliding windows, header pacing, the store protocol."""

from __future__ import annotations

import sys
import threading

import pytest

from erzy_pipelines.core.budget import RateWindow
from erzy_pipelines.erzycall import (
    InMemoryRateLimitStore,
    RateLimiter,
    RateLimitStore,
    errors,
)

from ._fakes import EPOCH, FakeClock, Script, api_response, contact_json, make_client


def limiter(clock: FakeClock, *windows: RateWindow, margin: float = 0.0, **kw) -> RateLimiter:
    return RateLimiter(windows, clock=clock, sleep=clock.sleep, wall_clock=clock.wall,
                       margin=margin, **kw)


def send_times(lim: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    times = []
    for _ in range(n):
        lim.acquire()
        times.append(round(clock.now, 6))
    return times


def test_short_window_spaces_bursts():
    clock = FakeClock()
    lim = limiter(clock, RateWindow(3, 1.0))
    assert send_times(lim, clock, 7) == [0, 0, 0, 1, 1, 1, 2]


def test_both_windows_are_kept():
    clock = FakeClock()
    lim = limiter(clock, RateWindow(3, 1.0), RateWindow(5, 10.0))
    # 3/s lets 3 through at 0 and 2 more at 1; then the 5/10s window holds until 10.
    assert send_times(lim, clock, 8) == [0, 0, 0, 1, 1, 10, 10, 10]


def test_sliding_not_fixed_window():
    clock = FakeClock()
    lim = limiter(clock, RateWindow(2, 10.0))
    lim.acquire()
    clock.now = 6.0
    lim.acquire()
    lim.acquire()  # the first slot frees at 10, the second only at 16
    assert clock.now == 10.0
    lim.acquire()
    assert clock.now == 16.0


def test_margin_is_added_to_every_window():
    clock = FakeClock()
    lim = limiter(clock, RateWindow(1, 2.0), margin=0.25)
    assert send_times(lim, clock, 3) == [0, 2.25, 4.5]


def test_timeout_raises_without_taking_a_slot():
    clock = FakeClock()
    lim = limiter(clock, RateWindow(1, 60.0))
    lim.acquire()
    with pytest.raises(errors.RateLimitTimeoutError) as info:
        lim.acquire(timeout=10.0)
    assert info.value.wait == pytest.approx(60.0) and clock.now == 0.0
    assert lim.try_acquire() == pytest.approx(60.0)


def test_low_remaining_header_spaces_requests_until_reset():
    clock = FakeClock()
    lim = limiter(clock, RateWindow(60, 60.0))
    lim.acquire()
    # Someone else spent the key's budget: 2 left, window resets in 30 s.
    lim.observe({"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "2",
                 "X-RateLimit-Reset": str(int(EPOCH + 30))})
    lim.acquire()
    assert clock.now == pytest.approx(10.0)  # 30 s spread over the 2 left (+1)
    lim.observe({"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0",
                 "X-RateLimit-Reset": str(int(EPOCH + 30))})
    lim.acquire()
    assert clock.now == pytest.approx(30.0)  # nothing left: wait for the reset


def test_plenty_remaining_or_matching_own_count_does_not_slow_down():
    clock = FakeClock()
    lim = limiter(clock, RateWindow(5, 60.0))
    for remaining in (4, 3, 2, 1, 0):
        lim.acquire()
        # Our own requests explain the low number: the window itself already holds us back.
        lim.observe({"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": str(remaining),
                     "X-RateLimit-Reset": str(int(EPOCH + 60))})
    assert clock.now == 0.0
    lim2 = limiter(FakeClock(), RateWindow(60, 60.0))
    lim2.observe({"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "40",
                  "X-RateLimit-Reset": str(int(EPOCH + 60))})
    assert lim2.try_acquire() == 0.0


def test_unknown_window_in_headers_is_respected():
    # The server enforces a window the client was not told about (10 where we allow 20).
    clock = FakeClock()
    lim = limiter(clock, RateWindow(20, 2.0))
    lim.acquire()
    lim.observe({"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0",
                 "X-RateLimit-Reset": str(int(EPOCH + 2))})
    lim.acquire()
    assert clock.now == pytest.approx(2.0)


def test_429_retry_after_pauses_the_whole_limiter():
    clock = FakeClock()
    lim = limiter(clock, RateWindow(100, 60.0))
    lim.observe({"Retry-After": "5"}, status=429)
    assert lim.try_acquire() == pytest.approx(5.0)


def test_garbage_headers_are_ignored():
    clock = FakeClock()
    lim = limiter(clock, RateWindow(100, 60.0))
    lim.observe({"X-RateLimit-Remaining": "lots", "X-RateLimit-Reset": "nan", "Retry-After": "x"},
                status=429)
    assert lim.try_acquire() == 0.0


def test_a_custom_store_satisfies_the_protocol_and_sees_every_acquire():
    class Recording:
        def __init__(self) -> None:
            self.calls: list[tuple[float, tuple[RateWindow, ...]]] = []
            self.inner = InMemoryRateLimitStore()

        def try_acquire(self, now: float, windows) -> float:
            self.calls.append((now, tuple(windows)))
            return self.inner.try_acquire(now, windows)

    store = Recording()
    assert isinstance(store, RateLimitStore)
    clock = FakeClock()
    lim = RateLimiter(
        (RateWindow(1, 1.0),), store=store, clock=clock, sleep=clock.sleep, margin=0.0
    )
    send_times(lim, clock, 2)
    assert [now for now, _ in store.calls] == [0.0, 0.0, 1.0]
    assert store.calls[0][1] == (RateWindow(1, 1.0),)


def test_two_limiters_sharing_a_store_share_the_budget():
    clock = FakeClock()
    store = InMemoryRateLimitStore()
    a = RateLimiter((RateWindow(2, 5.0),), store=store, clock=clock, sleep=clock.sleep, margin=0.0)
    b = RateLimiter((RateWindow(2, 5.0),), store=store, clock=clock, sleep=clock.sleep, margin=0.0)
    a.acquire()
    b.acquire()
    assert a.try_acquire() == pytest.approx(5.0) and b.try_acquire() == pytest.approx(5.0)


@pytest.fixture
def eager_thread_switching():
    """Switch threads every microsecond, not every 5 ms, so a race shows up in a short test."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def test_store_is_thread_safe(eager_thread_switching):
    # Without the store's lock, about half of these rounds grant 251 or hit "deque mutated
    # during iteration"; ten rounds (~0.3 s) make a miss very unlikely.
    for _ in range(10):
        store = InMemoryRateLimitStore()
        granted: list[int] = []
        failures: list[BaseException] = []
        start = threading.Barrier(4)

        def worker(store=store, granted=granted, failures=failures, start=start) -> None:
            start.wait()
            try:
                for _ in range(200):
                    if store.try_acquire(0.0, (RateWindow(250, 10.0),)) == 0.0:
                        granted.append(1)
            except Exception as exc:  # noqa: BLE001 - reported by the assert below
                failures.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == [] and len(granted) == 250


def test_client_takes_a_slot_for_every_attempt_including_retries():
    clock = FakeClock()
    script = Script(api_response(500, None), api_response(200, {"data": contact_json()}))
    client = make_client(script, clock, windows=(RateWindow(1, 10.0),))
    client.get_contact("contact_1")
    # The retry's own backoff (<= 0.5 s) is not enough: the limiter holds it to t = 10 + margin.
    assert clock.now == pytest.approx(10.1)
    assert client.limiter.total_waited > 9
