"""Which process runs a sync, and whether it is still alive.

A run records its process in its Dagster tags (host, pid, and when that process started). Any
process on the same host can then tell a live run from one that was killed (SIGKILL, OOM,
reboot): the pid is gone, or now belongs to a process that started at another time or before
another boot. From another host nothing can be told, and the run is taken to be alive.

No Dagster here: the tags are plain strings.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

HOST_TAG = "erzy/host"
PID_TAG = "erzy/pid"
STARTED_TAG = "erzy/process_started"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    """Fields 3… of /proc/<pid>/stat ([] where /proc cannot tell)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may hold spaces and parentheses; fields after it do not.
    return stat[stat.rfind(")") + 2 :].split()


def process_started(pid: int) -> str:
    """``<boot id>:<start time in clock ticks>`` of a process, "" where /proc cannot tell.

    Together with the pid it names one process for the life of the machine: a pid reused after
    the original died, or after a reboot, gives another value.
    """
    fields = _stat_fields(pid)
    return f"{_boot_id()}:{fields[19]}" if len(fields) > 19 else ""


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    pid: int
    started: str  # see process_started; "" if unknown

    @classmethod
    def current(cls) -> ProcessIdentity:
        pid = os.getpid()
        return cls(host=socket.gethostname(), pid=pid, started=process_started(pid))

    def tags(self) -> dict[str, str]:
        return {HOST_TAG: self.host, PID_TAG: str(self.pid), STARTED_TAG: self.started}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ProcessIdentity | None:
        try:
            host, pid = tags[HOST_TAG], int(tags[PID_TAG])
        except (KeyError, ValueError):
            return None
        return cls(host=host, pid=pid, started=tags.get(STARTED_TAG, ""))

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def is_alive(identity: ProcessIdentity) -> bool | None:
    """True or False for a process on this host; None when it runs elsewhere (cannot tell)."""
    if identity.host != socket.gethostname():
        return None
    try:
        os.kill(identity.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    fields = _stat_fields(identity.pid)
    if fields and fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    started = process_started(identity.pid)
    return not (identity.started and started and started != identity.started)
