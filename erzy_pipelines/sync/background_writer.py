"""One write at a time on a thread of its own, while the run goes on with the next chunk.

A first run of a million records writes a million record-cache rows and (a dry run) a million
audit rows. The database does most of that work outside Python's lock, so writing one chunk
while the next is being made takes that time off the run. One write is in flight at most, so
memory holds two chunks, and writes happen in the order they were submitted.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class BackgroundWriter:
    """``submit(fn, *args)`` runs ``fn`` on the writer thread after the previous write ended;
    a write's error is raised by the next ``submit`` or ``wait``, or on leaving the ``with``."""

    def __init__(self, name: str) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._pending: Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.wait()
        self._pending = self._thread.submit(fn, *args)

    def wait(self) -> None:
        """Until the write in flight (if any) is done; raises what it raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:
                self._pending.exception()  # let it end; the error already raised comes first
        finally:
            self._thread.shutdown(wait=True)
