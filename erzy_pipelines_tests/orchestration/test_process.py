"""Telling a live process from a dead one, by the identity a run records in its tags."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from erzy_pipelines.orchestration.process import ProcessIdentity, is_alive, process_started


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_live_process_is_alive_and_a_killed_one_is_not():
    proc = _sleeper()
    try:
        identity = ProcessIdentity.from_tags(
            {**ProcessIdentity.current().tags(), "erzy/pid": str(proc.pid),
             "erzy/process_started": process_started(proc.pid)}
        )
        assert identity is not None and is_alive(identity) is True
        proc.kill()
        deadline = time.monotonic() + 5  # a killed process not yet reaped (a zombie) is dead
        while is_alive(identity) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert is_alive(identity) is False and Path(f"/proc/{proc.pid}").exists()  # zombie
        proc.wait()
        assert is_alive(identity) is False
    finally:
        proc.kill()
        proc.wait()


def test_a_pid_now_used_by_another_process_is_not_the_run_s_process():
    me = ProcessIdentity.current()
    assert is_alive(me) is True
    reused = ProcessIdentity(host=me.host, pid=me.pid, started=me.started + "0")
    assert is_alive(reused) is False


def test_a_process_on_another_host_cannot_be_judged():
    elsewhere = ProcessIdentity(host="another-host.invalid", pid=os.getpid(), started="")
    assert is_alive(elsewhere) is None


def test_tags_round_trip_and_runs_without_them_have_no_identity():
    me = ProcessIdentity.current()
    assert ProcessIdentity.from_tags(me.tags()) == me
    assert ProcessIdentity.from_tags({}) is None
    assert ProcessIdentity.from_tags({"erzy/host": "h", "erzy/pid": "x"}) is None
