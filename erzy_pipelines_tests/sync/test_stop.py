"""The stop signal: a flag set by SIGTERM/Ctrl-C or found by polling, seen within a second."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from erzy_pipelines.sync.stop import StopSignal, SyncStopped


def test_sleep_returns_after_its_time_when_nobody_stops():
    stop = StopSignal()
    started = time.monotonic()
    stop.sleep(0.3)
    assert 0.3 <= time.monotonic() - started < 1.0


def test_sleep_gives_up_within_a_slice_when_a_stop_is_requested():
    stop = StopSignal()
    threading.Timer(0.2, stop.request, args=("test",)).start()
    started = time.monotonic()
    with pytest.raises(SyncStopped, match="test"):
        stop.sleep(30)
    assert time.monotonic() - started < 1.0


def test_the_cancel_poll_is_asked_at_most_every_poll_seconds():
    asked = []
    now = [0.0]
    stop = StopSignal(lambda: asked.append(now[0]) or len(asked) >= 3, clock=lambda: now[0])
    for t in (0.0, 0.5, 1.0, 2.0, 2.5, 4.0):
        now[0] = t
        stopped = stop.requested()
    assert asked == [0.0, 2.0, 4.0] and stopped
    assert stop.reason == "the run was canceled"


def test_sigterm_and_sigint_request_a_stop_and_the_handlers_are_restored():
    stop = StopSignal()
    before = signal.getsignal(signal.SIGTERM)
    with stop.on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested() and stop.reason == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(SyncStopped, match="stopped: SIGTERM"):
        stop.check()
