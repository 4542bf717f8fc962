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
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import phonenumbers
import phonenumbers.data

from erzy_pipelines.core.crm_row import Membership, to_record
from erzy_pipelines.core.dedupe import Merge, dedupe
from erzy_pipelines.core.group_figures import UNGROUPED_KEY
from erzy_pipelines.core.normalize import Contact, Reject
from erzy_pipelines.core.scope import SyncScope
from erzy_pipelines.state.record_cache import Known, RecordCache
from erzy_pipelines.sync.background_writer import BackgroundWriter
from erzy_pipelines.sync.stop import StopSignal
from erzy_pipelines.sync.workers import (
    Encoded,
    Item,
    Result,
    WorkerPool,
    decode,
    normalize_items,
)

RULES_VERSION = 1
"""Bump when a normalization rule changes: every stored record is then normalized again."""

PARALLEL_MIN_ROWS = 10_000
"""Fewer changed records than this are normalized in the run's own process (starting workers
costs more than it saves)."""
PARALLEL_CHUNK_ROWS = 2_000
CACHE_WRITE_ROWS = 20_000
PREVIEW_ROWS = 10
PREVIEW_SCAN_ROWS = 5_000
"""Previews (up to ``PREVIEW_ROWS`` per group) are taken from the first rows read."""
FP_MOD = 1 << 63
"""Fingerprints are below 2**63, and so are sums of them taken modulo 2**63: every one fits a
signed 64-bit column as it is."""


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


@dataclass(slots=True)
class Record:
    """One CRM record as a run holds it: small, so a million of them fit."""

    crm_id: str | None
    group_keys: tuple[str, ...]
    fingerprint: int
    phone: str | None = None  # E.164 when accepted; None when rejected (or not yet known)
    result: Any = None  # this run's normalization of it, until the contacts are made


@dataclass
class Extracted:
    """The CRM records one run covers (its groups' records and those sharing their phones)."""

    records: list[Record]
    columns: list[str]
    preview: list[dict[str, Any]] = field(default_factory=list)  # a few rows per group
    stranded: int = 0  # records included because they were last sent with a selected group
    same_phone: int = 0  # records of other groups sharing a phone with a selected record
    managed_groups: frozenset[str] = frozenset()  # every ErzyCall group id the mapping uses
    normalized: int = 0  # records normalized this run (the others were unchanged)
    vanished: int = 0  # records gone from the CRM since the last run
    read_started: datetime | None = None  # when the run began reading the CRM (UTC)


@dataclass
class Prepared:
    """What normalization and dedupe made of the run's records."""

    rejects: list[Reject]
    contacts: list[Contact]  # contacts to plan: one per phone whose records or state moved
    merges: list[Merge]
    dedupe_rejects: list[Reject] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)  # phones needing no work (any order)
    # phone → the fingerprint of its records, for the contacts to plan (stored with each
    # confirmed write, which makes the contact settled for the next run)
    fingerprints: dict[str, int] = field(default_factory=dict)
    accepted: int = 0  # records normalization accepted

    @property
    def all_rejects(self) -> list[Reject]:
        return self.rejects + self.dedupe_rejects

    @property
    def contact_count(self) -> int:
        return len(self.contacts) + len(self.settled)

    def sync_inputs(self) -> dict[str, Any]:
        """What ``sync_run.run_sync`` takes from the run's records, by keyword."""
        return {
            "contacts": self.contacts,
            "rejects": self.all_rejects,
            "merges": self.merges,
            "settled": self.settled,
            "fingerprints": self.fingerprints,
        }

    def parts(self) -> dict[str, Any]:
        """The lists by name, as ``core.group_figures.group_figures`` takes them."""
        return {
            "rejects": self.rejects,
            "contacts": [c.phone for c in self.contacts] + self.settled,
            "merges": self.merges,
            "dedupe_rejects": self.dedupe_rejects,
        }


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


class StaleRecordCache(RuntimeError):
    """Another run rewrote a stored record while this one read it; the step is retried."""


class _Scope:
    def __init__(self, scope: SyncScope, extra: set[str]) -> None:
        self.groups, self.ungrouped, self.extra = scope.groups, scope.include_ungrouped, extra

    def __call__(self, crm_id: str | None, keys: tuple[str, ...]) -> bool:
        if self.groups is None or crm_id in self.extra:
            return True
        return bool(self.groups.intersection(keys)) if keys else self.ungrouped


@dataclass
class _Scan:
    records: list[Record]
    changed: int  # records whose fingerprint was not the stored one
    vanished: list[str]
    columns: list[str]
    preview: list[dict[str, Any]]
    kept_rejects: dict[int, Reject]  # id(record) → its stored reject, for unchanged rejects


def scan(
    batches: Iterable[tuple[list[str], Sequence[Sequence[Any]]]],
    memberships: Mapping[str, Sequence[Membership]],
    known: dict[str, Known],
    stored_rejects: Mapping[str, Reject],
    region: str,
    in_scope: Callable[[str | None, tuple[str, ...]], bool],
    on_changed: Callable[[Record, list[str], Item], None],
) -> _Scan:
    """Fingerprint every record; hand each whose fingerprint is not the stored one to
    ``on_changed`` with the query's columns and its raw item (row, crm_id, memberships).
    ``known`` is consumed: what is left in it afterwards has vanished."""
    records: list[Record] = []
    changed = 0
    kept_rejects: dict[int, Reject] = {}
    preview: dict[str, list[dict[str, Any]]] = {}
    keys_of: dict[Any, tuple[str, ...]] = {}  # memberships → sorted group keys (few distinct)
    columns: list[str] = []
    fingerprint: Callable[[Sequence[Any], Any], int] | None = None
    i_crm = 0
    for cols, rows in batches:
        if fingerprint is None:
            columns, i_crm = cols, cols.index("crm_id")
            fingerprint = fingerprinter(cols, region)
        for row in rows:
            raw_id = row[i_crm]
            crm_id = None if raw_id is None else (raw_id if type(raw_id) is str else str(raw_id))
            member_of = memberships.get(crm_id, ()) if crm_id is not None else ()
            keys = keys_of.get(member_of)
            if keys is None:
                keys = keys_of[member_of] = tuple(sorted({key for key, _ in member_of}))
            record = Record(crm_id, keys, fingerprint(row, member_of))
            records.append(record)
            before = known.pop(crm_id, None) if crm_id is not None else None
            is_new = (
                before is None
                or before[0] != record.fingerprint
                or (before[1] is None and crm_id not in stored_rejects)
            )
            if not is_new:
                record.phone = before[1]  # type: ignore[index]
                if record.phone is None:
                    kept_rejects[id(record)] = stored_rejects[crm_id]  # type: ignore[index]
            wanted = None
            if len(records) <= PREVIEW_SCAN_ROWS and in_scope(crm_id, keys):
                slot_key = keys[0] if keys else UNGROUPED_KEY
                slot = preview.get(slot_key)
                if slot is None:
                    slot = preview[slot_key] = []
                if len(slot) < PREVIEW_ROWS:
                    wanted = slot
            if is_new:
                changed += 1
                on_changed(record, cols, (tuple(row), crm_id, member_of))
            if wanted is not None:
                wanted.append(to_record(cols, row, crm_id, member_of))
    vanished = list(known)
    rows_preview = [row for slot in preview.values() for row in slot]
    return _Scan(records, changed, vanished, columns, rows_preview, kept_rejects)


class StreamingNormalizer:
    """Normalizes records as a scan finds them, results handed back in the order they came.

    Records are buffered until there are ``PARALLEL_MIN_ROWS`` of them; from then on they go in
    chunks to worker processes (``normalize_workers``), with at most two chunks per worker in
    flight, so only those chunks' raw rows are held at any moment. Fewer records are
    normalized here at :meth:`finish`. The result is the same either way: ``on_results`` gets
    ``(tag, encoded)`` pairs (``normalize_workers.decode`` makes the contact or reject).
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


def _clusters(records: Iterable[Record]) -> tuple[dict[str, int], set[str]]:
    """phone → the sum of its records' fingerprints modulo 2**63 (order does not matter), and
    the phones with several records."""
    sums: dict[str, int] = {}
    several: set[str] = set()
    for record in records:
        phone = record.phone
        if phone is not None:
            before = sums.get(phone)
            if before is None:
                sums[phone] = record.fingerprint
            else:
                sums[phone] = before + record.fingerprint
                several.add(phone)
    return {phone: fp if fp < FP_MOD else fp % FP_MOD for phone, fp in sums.items()}, several


def _contacts_of(members: list[Record], cache: RecordCache) -> list[Contact]:
    """The normalized contacts of these records: this run's, or those stored for them."""
    stored = cache.contacts(
        r.crm_id for r in members if r.result is None and r.crm_id is not None
    )
    contacts: list[Contact] = []
    for r in members:
        result = r.result
        if isinstance(result, Contact):
            contacts.append(result)
            continue
        fp, contact = stored.get(r.crm_id or "", (None, None))
        if contact is None or fp != r.fingerprint:
            # Replaced by a run that read the CRM at another moment (or unreadable): forget it,
            # so the step's retry normalizes it again.
            cache.save({}, [r.crm_id] if r.crm_id is not None else [])
            raise StaleRecordCache(f"the stored form of CRM record {r.crm_id} changed meanwhile")
        contacts.append(contact)
    return contacts


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
    known, stored_rejects = cache.load()
    in_scope = _Scope(scope, extra)
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
    stop.check()
    log(
        f"{len(found.records)} CRM records: {found.changed} new or changed (normalized), "
        f"{len(found.records) - found.changed} unchanged, {len(found.vanished)} gone"
    )

    whole = scope.groups is None
    selected = found.records if whole else [
        r for r in found.records if in_scope(r.crm_id, r.group_keys)
    ]
    cluster_fp, several = _clusters(found.records)
    phones = set(cluster_fp) if whole else {r.phone for r in selected if r.phone is not None}
    if whole:
        run_records = found.records
    else:
        chosen = {id(r) for r in selected}
        run_records = [r for r in found.records if id(r) in chosen or r.phone in phones]
    settled_fp = {} if replan_all else settled_lookup(None if whole else phones)
    fingerprints = {  # of the phones whose contact is not settled
        phone: cluster_fp[phone] for phone in phones if settled_fp.get(phone) != cluster_fp[phone]
    }
    dirty = fingerprints.keys()
    redo = set(dirty) | (several & phones)
    normalized = _contacts_of([r for r in run_records if r.phone in redo], cache)
    contacts, merges, dedupe_rejects = dedupe(normalized)
    rejected_phones = {r.phone for r in dedupe_rejects}

    rejects: list[Reject] = []
    for r in run_records:
        if r.phone is None:
            result = r.result
            rejects.append(result if isinstance(result, Reject) else found.kept_rejects[id(r)])
    for r in found.records:
        r.result = None  # the contacts and rejects are in hand; the records stay small
    extracted = Extracted(
        records=run_records,
        columns=found.columns or ["crm_id", "title", "phone", "group_keys", "group_ids"],
        preview=found.preview,
        stranded=0 if whole else sum(1 for r in selected if r.crm_id in extra),
        same_phone=len(run_records) - len(selected),
        managed_groups=frozenset(
            gid for groups in memberships.values() for _, gid in groups if gid
        ),
        normalized=found.changed,
        vanished=len(found.vanished),
    )
    prepared = Prepared(
        rejects=rejects,
        contacts=[c for c in contacts if c.phone in dirty],
        merges=merges,
        dedupe_rejects=dedupe_rejects,
        settled=list(phones - dirty - rejected_phones),
        fingerprints=fingerprints,
        accepted=sum(1 for r in run_records if r.phone is not None),
    )
    return extracted, prepared


