"""Worker processes that normalize chunks of CRM rows, for first runs and mass changes.

Each worker is ``python -m erzy_pipelines.sync.workers``: it imports normalization only
(about 30 MB) where a ``multiprocessing`` spawn would import the whole run's program again (the
CLI or Dagster's run worker, over 100 MB each), and it takes one pickled chunk at a time over
its stdin, answering on its stdout. ``WorkerPool.submit`` returns a ``Future`` like the
``concurrent.futures`` pools; one thread per worker does the exchange, so the pipes never
deadlock and the run's thread only waits for results.

What crosses the pipes is kept cheap to pickle, because a first run sends a million records
each way: raw rows as the query returned them (the worker makes the row dicts), and each
contact back as its ``encode_contact`` bytes, which the record cache stores as they are.

A worker ignores Ctrl-C (the run decides when to stop) and exits when its stdin closes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import traceback
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from erzy_pipelines.core.contact_codec import decode_contact, encode_contact
from erzy_pipelines.core.crm_row import Membership, to_record
from erzy_pipelines.core.normalize import Contact, Reject, normalize_row

Result = Contact | Reject
Item = tuple[Sequence[Any], str | None, Sequence[Membership]]
"""One record to normalize: its raw row (in the query's column order), crm_id as text, and
its memberships."""
Encoded = bytes | Reject
"""A normalized record as it comes back: a contact's ``encode_contact`` bytes, or its reject."""
_HEADER = 8  # bytes of the length prefix before each pickled message


def normalize_items(cols: Sequence[str], items: Sequence[Item], region: str) -> list[Encoded]:
    """Normalize a chunk of raw records, contacts encoded (see module)."""
    out: list[Encoded] = []
    for row, crm_id, member_of in items:
        result = normalize_row(to_record(cols, row, crm_id, member_of), region)
        out.append(encode_contact(result) if isinstance(result, Contact) else result)
    return out


def decode(encoded: Encoded, shared: dict[Any, Any]) -> Result:
    """The contact or reject a worker sent (``shared``: see ``contact_codec.decode_contact``)."""
    if isinstance(encoded, Reject):
        return encoded
    contact = decode_contact(encoded, shared)
    if contact is None:
        raise RuntimeError("a normalizing worker sent a contact that does not decode")
    return contact


def _send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=5)
    stream.write(len(data).to_bytes(_HEADER, "big"))
    stream.write(data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    """The next message, or EOFError when the other side is gone."""
    header = stream.read(_HEADER)
    if len(header) < _HEADER:
        raise EOFError
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class WorkerPool:
    """``workers`` normalizing processes; see the module docstring."""

    def __init__(self, workers: int) -> None:
        # The run's own import path (its working folder included), as a spawn would pass it.
        path = os.pathsep.join(p or os.getcwd() for p in sys.path)
        env = {**os.environ, "PYTHONPATH": path}
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(workers):
                self._procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", __name__],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                    )
                )
        except BaseException:
            self._stop(kill=True)
            raise
        self._idle: queue.SimpleQueue[subprocess.Popen[bytes]] = queue.SimpleQueue()
        for proc in self._procs:
            self._idle.put(proc)
        self._threads = ThreadPoolExecutor(workers, thread_name_prefix="erzy-normalize")

    def submit(
        self, cols: Sequence[str], items: Sequence[Item], region: str
    ) -> Future[list[Encoded]]:
        """``normalize_items(cols, items, region)`` on the next free worker."""
        return self._threads.submit(self._exchange, (cols, items, region))

    def _exchange(self, task: tuple[Sequence[str], Sequence[Item], str]) -> list[Encoded]:
        proc = self._idle.get()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                _send(proc.stdin, task)
                ok, answer = _receive(proc.stdout)
            except (EOFError, BrokenPipeError):
                try:
                    code: int | None = proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    code = None
                raise RuntimeError(
                    f"a normalizing worker process ended unexpectedly (exit code {code})"
                ) from None
            if not ok:
                raise RuntimeError(f"a normalizing worker process failed:\n{answer}")
            return answer
        finally:
            self._idle.put(proc)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers: after their current chunk when ``wait``, at once otherwise."""
        self._threads.shutdown(wait=wait, cancel_futures=True)
        self._stop(kill=not wait)

    def _stop(self, *, kill: bool) -> None:
        for proc in self._procs:
            if kill:
                proc.kill()
            if proc.stdin is not None:
                with contextlib.suppress(OSError):  # BrokenPipeError: it is gone already
                    proc.stdin.close()  # end of input: the worker exits
        for proc in self._procs:
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def serve_normalizing() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers
    while True:
        try:
            cols, items, region = _receive(stdin)
        except EOFError:
            return
        try:
            answer: tuple[bool, Any] = (True, normalize_items(cols, items, region))
        except Exception:  # noqa: BLE001 - reported to the run, which raises it
            answer = (False, traceback.format_exc())
        _send(stdout, answer)


if __name__ == "__main__":
    serve_normalizing()
