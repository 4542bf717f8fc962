"""``python -m erzy_pipelines_tests.faults._child sync ...``: the real CLI, plus two test hooks.

- ``ERZY_FAULTS_BARRIER=<dir>/<name>``: once the run has planned (right before it sends), create
  ``<dir>/<name>.ready`` and wait for ``<dir>/go``. Two runs started this way plan from the same
  state and start sending at the same moment — the worst case for overlapping syncs.
- ``ERZY_FAULTS_BREAK=renewal``: a negative control: leases are never renewed while waiting nor
  confirmed before a send.
- ``ERZY_FAULTS_BREAK=leases``: a negative control. Claims always succeed, writes are not
  fenced and the re-check under the lease is skipped, so the proof that leases matter can be
  shown to fail.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _install_barrier(spec: str) -> None:
    from erzy_pipelines.sync import send as upsert

    base = Path(spec)
    ready, go = base.with_name(base.name + ".ready"), base.with_name("go")
    real = upsert.execute_plan

    def execute_plan(plan, **kwargs):  # type: ignore[no-untyped-def]
        ready.touch()
        deadline = time.monotonic() + 120
        while not go.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("barrier: nobody said go")
            time.sleep(0.01)
        return real(plan, **kwargs)

    upsert.execute_plan = execute_plan


def _break_leases() -> None:
    from erzy_pipelines.state import StateStore
    from erzy_pipelines.sync import send as upsert
    from erzy_pipelines.sync.lease_keeper import LeaseKeeper

    def unfenced(self, phone, run_id, values):  # type: ignore[no-untyped-def]
        """A contact write with no lease condition at all."""
        self._write(lambda conn: self._upsert_state(conn, [phone], dict(values)))

    StateStore.claim = lambda self, phone, run_id, *a, **k: True  # type: ignore[method-assign]
    StateStore._fenced = unfenced  # type: ignore[method-assign]
    LeaseKeeper.confirm = lambda self: None  # type: ignore[method-assign]
    # send the plan as made: no re-plan, no check of the read's age under the lease
    upsert._checked_under_lease = lambda store, op, *a, **k: op


def _break_renewal() -> None:
    """Leases are taken but never renewed nor confirmed before a send (the fences stay)."""
    from erzy_pipelines.sync.lease_keeper import LeaseKeeper

    LeaseKeeper.hold = lambda self, phone: None  # type: ignore[method-assign]


def main() -> int:
    if os.environ.get("ERZY_FAULTS_BARRIER"):
        _install_barrier(os.environ["ERZY_FAULTS_BARRIER"])
    if os.environ.get("ERZY_FAULTS_BREAK") == "leases":
        _break_leases()
    if os.environ.get("ERZY_FAULTS_BREAK") == "renewal":
        _break_renewal()
    from erzy_pipelines.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
