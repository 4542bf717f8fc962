"""Local work in proportion to what changed in the CRM since the last run.

Every run still reads the whole contacts query (it is the user's SQL: only reading it shows what
changed or vanished), but it does little with an unchanged record:

1. **Fingerprint** each record: a 64-bit hash of its raw columns, its memberships (as a set: the
   memberships query's row order does not matter), the query's columns, the default region and
   the :func:`normalization_environment` (``RULES_VERSION``, the phonenumbers version and
   metadata, the Unicode data version), so a change of any input of normalization changes every
   fingerprint.
2. **Normalize only what changed.** A record whose fingerprint matches the one stored in
   ``erzy_crm_records`` takes its phone, contact or reject from there; the others are
   normalized (on several processes when there are many) and stored.
3. **Cluster fingerprints.** A phone's contact is made from the records with that phone; its
   fingerprint is the sum of theirs. ``erzy_contacts.source_fp`` holds the fingerprint the
   payload ErzyCall holds was made from: equal, with nothing pending, deferred or failed, the
   contact is *settled* and neither deduped nor planned (counted as unchanged). A changed, new
   or vanished record changes its phone's fingerprint, so only those clusters are redone.
4. Phones with several records are always deduped again (from stored contacts), so every run
   still audits its merges, exactly as a from-scratch run would.

The parts live beside this module: ``record_scan.py`` (step 1's loop), ``selection.py`` (step 3)
and ``records.py`` (what the pass hands on). Here stay what seeds the fingerprints, the streaming
normalizer of step 2, and the pass itself, :func:`prepare_incremental`.

``erzy_pipelines_tests/sync/test_prepare.py`` checks, on randomized CRMs and edits, that this
plans exactly what a from-scratch run plans.
"""

from __future__ import annotations

import gc
import hashlib
import os
import pickle
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import phonenumbers
import phonenumbers.data

from erzy_pipelines.core.crm_row import Membership
from erzy_pipelines.core.dedupe import dedupe
from erzy_pipelines.core.normalize import Contact, Reject
from erzy_pipelines.core.scope import SyncScope
from erzy_pipelines.state.record_cache import Known, RecordCache
from erzy_pipelines.sync.background_writer import BackgroundWriter
from erzy_pipelines.sync.record_scan import PREVIEW_ROWS, PREVIEW_SCAN_ROWS, Scan, scan_records
from erzy_pipelines.sync.records import Extracted, Prepared, Record
from erzy_pipelines.sync.selection import (
    FP_MOD,
    RunScope,
    Selection,
    StaleRecordCache,
    contacts_of,
    rejects_of,
    select_records,
)
from erzy_pipelines.sync.stop import StopSignal
from erzy_pipelines.sync.workers import Encoded, Item, Result, WorkerPool, decode, normalize_items

# What other modules import from here (several now live in the sibling modules named above).
__all__ = [
    "CACHE_WRITE_ROWS",
    "FP_MOD",
    "PARALLEL_CHUNK_ROWS",
    "PARALLEL_MIN_ROWS",
    "PREVIEW_ROWS",
    "PREVIEW_SCAN_ROWS",
    "RULES_VERSION",
    "Extracted",
    "Prepared",
    "Record",
    "StaleRecordCache",
    "StreamingNormalizer",
    "fingerprinter",
    "gc_paused",
    "normalization_environment",
    "normalize_many",
    "prepare_incremental",
    "scan",
]

RULES_VERSION = 1
"""Bump when a normalization rule changes: every stored record is then normalized again."""

PARALLEL_MIN_ROWS = 10_000
"""Fewer changed records than this are normalized in the run's own process (starting workers
costs more than it saves)."""
PARALLEL_CHUNK_ROWS = 2_000
CACHE_WRITE_ROWS = 20_000


@lru_cache(maxsize=4)
def _metadata_digest(folder: str) -> str:
    """A hash of phonenumbers' metadata files (about 0.5 MB, read once per process): a build that
    patched them without a new version still normalizes differently."""
    h = hashlib.blake2b(digest_size=16)
    try:
        for path in sorted(Path(folder).glob("*.py")):
            data = path.read_bytes()
            h.update(f"{path.name}:{len(data)}:".encode())
            h.update(data)
    except OSError:  # not plain files (a zipped install): the version alone must do
        return "unreadable"
    return h.hexdigest()


def normalization_environment() -> tuple[Any, ...]:
    """Everything besides a record and the settings that decides what normalization makes of it:
    the package's ``RULES_VERSION``, the phonenumbers version and its metadata, and the Unicode
    data version (NFC, casefold, invisible characters). Folded into every record fingerprint, so
    an upgrade that changes a result normalizes every record again once (a number a newer
    phonenumbers accepts is no longer kept as rejected). Read at each call, not at import."""
    return (
        RULES_VERSION,
        phonenumbers.__version__,
        _metadata_digest(str(Path(phonenumbers.data.__file__).parent)),
        unicodedata.unidata_version,
    )


def _membership_order(m: Membership) -> tuple[str, bool, str]:
    return (m[0], m[1] is not None, m[1] or "")


def fingerprinter(columns: Sequence[str], region: str) -> Callable[[Sequence[Any], Any], int]:
    """``fingerprint(raw_row, memberships)``: a 63-bit hash of what normalization reads for one
    record, seeded with the query's columns, the region and the normalization environment.
    Memberships are hashed as a sorted set, as normalization reads them: the order of the
    memberships query's rows changes nothing."""
    base = hashlib.blake2b(digest_size=8)
    base.update(
        pickle.dumps((normalization_environment(), region, tuple(columns)), protocol=5)
    )
    canonical: dict[Any, tuple[Membership, ...]] = {}  # few distinct membership tuples

    def fingerprint(row: Sequence[Any], member_of: Any) -> int:
        groups = canonical.get(member_of)
        if groups is None:
            groups = canonical[member_of] = tuple(sorted(set(member_of), key=_membership_order))
        h = base.copy()
        h.update(pickle.dumps((tuple(row), groups), protocol=5))
        return int.from_bytes(h.digest(), "big") >> 1

    return fingerprint


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a million small objects are built, and none of them
    scanned by later collections (``gc.freeze``): each full collection would walk them all,
    and they hold no cycles (reference counting still frees them)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def scan(
    batches: Iterable[tuple[list[str], Sequence[Sequence[Any]]]],
    memberships: Mapping[str, Sequence[Membership]],
    known: dict[str, Known],
    stored_rejects: Mapping[str, Reject],
    region: str,
    in_scope: Callable[[str | None, tuple[str, ...]], bool],
    on_changed: Callable[[Record, list[str], Item], None],
) -> Scan:
    """Fingerprint every record (:func:`fingerprinter`, seeded with ``region``); hand each
    whose fingerprint is not the stored one to ``on_changed`` with the query's columns and its
    raw item (row, crm_id, memberships). ``known`` is consumed: what is left in it afterwards
    has vanished. See :func:`erzy_pipelines.sync.record_scan.scan_records`."""
    return scan_records(
        batches,
        memberships,
        known,
        stored_rejects,
        lambda cols: fingerprinter(cols, region),
        in_scope,
        on_changed,
    )


class StreamingNormalizer:
    """Normalizes records as a scan finds them, results handed back in the order they came.

    Records are buffered until there are ``PARALLEL_MIN_ROWS`` of them; from then on they go in
    chunks to worker processes (``sync/workers.py``), with at most two chunks per worker in
    flight, so only those chunks' raw rows are held at any moment. Fewer records are
    normalized here at :meth:`finish`. The result is the same either way: ``on_results`` gets
    ``(tag, encoded)`` pairs (``workers.decode`` makes the contact or reject).
    """

    def __init__(
        self,
        region: str,
        stop: StopSignal,
        on_results: Callable[[list[tuple[Any, Encoded]]], None],
        workers: int | None = None,
    ) -> None:
        self.region, self.stop, self.on_results = region, stop, on_results
        self.workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
        self.cols: list[str] = []
        self.pending: list[tuple[Any, Item]] = []
        self.inflight: deque[tuple[list[Any], Future[list[Encoded]]]] = deque()
        self.pool: WorkerPool | None = None
        self.count = 0

    def __enter__(self) -> StreamingNormalizer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=exc[0] is None)

    def add(self, tag: Any, cols: list[str], item: Item) -> None:
        """Normalize ``item`` (a raw row in ``cols`` order, crm_id, memberships): every item of
        one run has the same columns."""
        self.cols = cols
        self.pending.append((tag, item))
        self.count += 1
        if self.pool is None:
            if self.workers > 1 and len(self.pending) >= PARALLEL_MIN_ROWS:
                self.pool = WorkerPool(self.workers)
                self._submit()
        elif len(self.pending) >= PARALLEL_CHUNK_ROWS:
            self._submit()

    def _submit(self) -> None:
        assert self.pool is not None
        for i in range(0, len(self.pending), PARALLEL_CHUNK_ROWS):
            chunk = self.pending[i : i + PARALLEL_CHUNK_ROWS]
            future = self.pool.submit(self.cols, [item for _, item in chunk], self.region)
            self.inflight.append(([tag for tag, _ in chunk], future))
            while len(self.inflight) > 2 * self.workers:
                self._collect_oldest()
        self.pending = []

    def _collect_oldest(self) -> None:
        tags, future = self.inflight.popleft()
        self.stop.check()
        self.on_results(list(zip(tags, future.result(), strict=True)))

    def finish(self) -> None:
        """Normalize what is left and hand every result back."""
        if self.pool is None:
            for i in range(0, len(self.pending), PARALLEL_CHUNK_ROWS):
                self.stop.check()
                chunk = self.pending[i : i + PARALLEL_CHUNK_ROWS]
                done = normalize_items(self.cols, [item for _, item in chunk], self.region)
                self.on_results(list(zip((tag for tag, _ in chunk), done, strict=True)))
            self.pending = []
            return
        self._submit()
        while self.inflight:
            self._collect_oldest()


def normalize_many(
    cols: list[str], items: Sequence[Item], region: str, stop: StopSignal,
    workers: int | None = None,
) -> list[Result]:
    """Every record's contact or reject, in input order (on several processes when many)."""
    out: list[Result] = []
    shared: dict[Any, Any] = {}
    with StreamingNormalizer(
        region, stop, lambda done: out.extend(decode(e, shared) for _, e in done), workers
    ) as normalizer:
        for i, item in enumerate(items):
            normalizer.add(i, cols, item)
        normalizer.finish()
    return out


def _scan_and_normalize(
    batches: Iterable[tuple[list[str], Sequence[Sequence[Any]]]],
    memberships: Mapping[str, Sequence[Membership]],
    cache: RecordCache,
    loaded: tuple[dict[str, Known], Mapping[str, Reject]],
    region: str,
    in_scope: RunScope,
    stop: StopSignal,
    workers: int | None,
) -> Scan:
    """Scan the records (``loaded``: what the record cache held), normalizing the changed ones
    as the scan finds them and storing them in the cache on a background thread, in batches of
    ``CACHE_WRITE_ROWS``; the vanished ones are forgotten with the last batch."""
    known, stored_rejects = loaded
    shared: dict[Any, Any] = {}  # equal tuples of the decoded contacts, held once

    with BackgroundWriter("erzy-record-cache") as writer:
        to_store: dict[str, tuple[int, Result, bytes | None]] = {}

        def normalized(done: list[tuple[Any, Encoded]]) -> None:
            nonlocal to_store
            for record, encoded in done:
                result = decode(encoded, shared)
                record.phone = result.phone if isinstance(result, Contact) else None
                record.result = result
                if record.crm_id is not None:
                    data = encoded if isinstance(encoded, bytes) else None
                    to_store[record.crm_id] = (record.fingerprint, result, data)
            if len(to_store) >= CACHE_WRITE_ROWS:
                writer.submit(cache.save, to_store)
                to_store = {}

        with StreamingNormalizer(region, stop, normalized, workers) as normalizer:
            found = scan(
                batches, memberships, known, stored_rejects, region, in_scope, normalizer.add
            )
            normalizer.finish()
        writer.submit(cache.save, to_store, found.vanished)
    return found


def _extracted(
    found: Scan,
    chosen: Selection,
    in_scope: RunScope,
    memberships: Mapping[str, Sequence[Membership]],
) -> Extracted:
    """The run's records as the later steps see them, with the scan's figures."""
    return Extracted(
        records=chosen.run_records,
        columns=found.columns or ["crm_id", "title", "phone", "group_keys", "group_ids"],
        preview=found.preview,
        stranded=0 if in_scope.whole else sum(
            1 for r in chosen.selected if r.crm_id in in_scope.extra
        ),
        same_phone=len(chosen.run_records) - len(chosen.selected),
        managed_groups=frozenset(
            gid for groups in memberships.values() for _, gid in groups if gid
        ),
        normalized=found.changed,
        vanished=len(found.vanished),
    )


def prepare_incremental(
    *,
    batches: Iterable[tuple[list[str], Sequence[Sequence[Any]]]],
    memberships: Mapping[str, Sequence[Membership]],
    scope: SyncScope,
    extra: set[str],
    cache: RecordCache,
    settled_lookup: Callable[[Iterable[str] | None], dict[str, int]],
    region: str,
    stop: StopSignal,
    replan_all: bool = False,
    workers: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[Extracted, Prepared]:
    """The run's records, normalized where they changed, and the contacts that need planning.
    ``replan_all`` (a full resync) plans every contact of the scope, settled or not."""
    loaded = cache.load()
    in_scope = RunScope(scope, extra)
    found = _scan_and_normalize(
        batches, memberships, cache, loaded, region, in_scope, stop, workers
    )
    stop.check()
    log(
        f"{len(found.records)} CRM records: {found.changed} new or changed (normalized), "
        f"{len(found.records) - found.changed} unchanged, {len(found.vanished)} gone"
    )

    chosen = select_records(found.records, in_scope, settled_lookup, replan_all)
    dirty = chosen.fingerprints.keys()
    normalized = contacts_of([r for r in chosen.run_records if r.phone in chosen.redo], cache)
    contacts, merges, dedupe_rejects = dedupe(normalized)
    rejected_phones = {r.phone for r in dedupe_rejects}
    rejects = rejects_of(chosen.run_records, found.kept_rejects)
    for r in found.records:
        r.result = None  # the contacts and rejects are in hand; the records stay small
    extracted = _extracted(found, chosen, in_scope, memberships)
    prepared = Prepared(
        rejects=rejects,
        contacts=[c for c in contacts if c.phone in dirty],
        merges=merges,
        dedupe_rejects=dedupe_rejects,
        settled=list(chosen.phones - dirty - rejected_phones),
        fingerprints=chosen.fingerprints,
        accepted=sum(1 for r in chosen.run_records if r.phone is not None),
    )
    return extracted, prepared
