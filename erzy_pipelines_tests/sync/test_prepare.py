"""The incremental path plans exactly what a from-scratch run plans.

On randomized CRMs (duplicates, rejects, groups) edited at random between runs — fields, phones,
memberships, records added and removed, the default region switched — one state database is
kept across rounds, as a user keeps it, and outcomes are recorded the way runs record them
(some sent, some left in doubt, some deferred, some failed). Each round compares the incremental
plan with the plan made from scratch against the same state, for the whole CRM and for group
scopes: operations (action, body, idempotency key), unchanged contacts, rejects and merges.
"""

from __future__ import annotations

import random
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import phonenumbers
import phonenumbers.data
import pytest
import sqlalchemy as sa

from erzy_pipelines.core.crm_row import to_record
from erzy_pipelines.core.normalize import normalize_row
from erzy_pipelines.core.plan import plan_operations
from erzy_pipelines.core.scope import SyncScope
from erzy_pipelines.crm.extract import (
    create_crm_engine,
    iter_contact_chunks,
    load_memberships,
    raw_contact_batches,
)
from erzy_pipelines.state import StateStore
from erzy_pipelines.state.record_cache import RecordCache
from erzy_pipelines.sync import prepare as incremental
from erzy_pipelines.sync.prepare import normalize_many, prepare_incremental
from erzy_pipelines.sync.stop import StopSignal
from erzy_pipelines_tests.reference import extract, prepare

CONTACTS_SQL = (
    "SELECT id AS crm_id, name AS title, phone, email, tags, country, updated_at FROM people"
)
MEMBERSHIPS_SQL = "SELECT person_id AS crm_id, group_key, erzy_group AS erzycall_group_id FROM pg"
GROUPS = {"vip": "grp_vip", "news": "grp_news", "trial": "grp_trial", "local": None}
PHONES = [f"(415) 555-{2000 + i:04d}" for i in range(40)] + [
    "+44 20 7946 0958",
    "020 7946 0018",  # valid in GB, not in US
    "12",
    "",
    "not a phone",
]


def _person(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": rng.choice([f"Person {i}", "", f"P{i} Smith"]),
        "phone": rng.choice(PHONES),
        "email": rng.choice([None, f"p{i}@example.com", "broken@"]),
        "tags": rng.choice([None, "a,b", "vip", "b,c,d"]),
        "country": rng.choice([None, None, "GB", "us"]),
        "updated_at": f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} 10:00:00",
    }


class Crm:
    def __init__(self, path: Path, rng: random.Random) -> None:
        self.rng = rng
        self.engine = sa.create_engine(f"sqlite:///{path}")
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, phone TEXT, "
                "email TEXT, tags TEXT, country TEXT, updated_at TEXT)"
            )
            conn.exec_driver_sql(
                "CREATE TABLE pg (person_id INTEGER, group_key TEXT, erzy_group TEXT)"
            )
        self.next_id = 1
        for _ in range(60):
            self.add()

    def add(self) -> None:
        i = self.next_id
        self.next_id += 1
        row = _person(self.rng, i)
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO people VALUES (:id, :name, :phone, :email, :tags, :country, "
                ":updated_at)"), row)
            for key in self.rng.sample(sorted(GROUPS), self.rng.choice([0, 1, 1, 2])):
                conn.execute(sa.text("INSERT INTO pg VALUES (:p, :k, :g)"),
                             {"p": i, "k": key, "g": GROUPS[key]})

    def edit(self, n: int) -> None:
        with self.engine.begin() as conn:
            ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM people")]
            for i in self.rng.sample(ids, min(n, len(ids))):
                what = self.rng.choice(["field", "phone", "groups", "delete", "touch"])
                fresh = _person(self.rng, i)
                if what == "field":
                    column = self.rng.choice(["name", "email", "tags", "country"])
                    conn.execute(sa.text(f"UPDATE people SET {column} = :v WHERE id = :i"),
                                 {"v": fresh[column], "i": i})
                elif what == "phone":
                    conn.execute(sa.text("UPDATE people SET phone = :v WHERE id = :i"),
                                 {"v": fresh["phone"], "i": i})
                elif what == "groups":
                    conn.execute(sa.text("DELETE FROM pg WHERE person_id = :i"), {"i": i})
                    for key in self.rng.sample(sorted(GROUPS), self.rng.choice([0, 1, 2])):
                        conn.execute(sa.text("INSERT INTO pg VALUES (:p, :k, :g)"),
                                     {"p": i, "k": key, "g": GROUPS[key]})
                elif what == "delete":
                    conn.execute(sa.text("DELETE FROM people WHERE id = :i"), {"i": i})
                else:
                    conn.execute(sa.text("UPDATE people SET updated_at = :v WHERE id = :i"),
                                 {"v": fresh["updated_at"], "i": i})
        for _ in range(self.rng.randint(0, 3)):
            self.add()


def _ops(plan: Any) -> set[tuple]:
    return {(op.contact.phone, op.action.value, repr(sorted(op.body.items())), op.idempotency_key,
             op.requests) for op in plan.operations}


def _rejects(rejects: Any) -> list[tuple]:
    return sorted((r.crm_id or "", r.reason, r.detail, r.phone or "") for r in rejects)


def _record_outcomes(store: StateStore, plan: Any, fingerprints: dict[str, int],
                     rng: random.Random, run: str) -> None:
    """What a run leaves behind: most writes confirmed, some in doubt, deferred or failed."""
    from erzy_pipelines.core.payload import payload_hash, to_payload

    store.mark_settled((c.phone, payload_hash(to_payload(c)), fingerprints[c.phone])
                       for c in plan.unchanged)
    for op in plan.operations:
        phone = op.contact.phone
        fate = rng.choices(["ok", "doubt", "deferred", "failed"], [70, 10, 10, 10])[0]
        if fate == "deferred":
            store.record_deferred([phone], run)
            continue
        assert store.claim(phone, run, 60)
        store.begin_intent(phone, run, op.intent_seq, op.payload_hash, op.idempotency_key)
        if fate == "ok":
            store.record_success(phone, run, remote_id=op.remote_id or f"c_{phone}",
                                 payload=op.payload, payload_hash=op.payload_hash,
                                 crm_ids=op.contact.crm_ids, created=op.remote_id is None,
                                 outcome="created", source_fp=op.source_fp)
        elif fate == "failed":
            store.record_failure(phone, run, outcome="failed", error_code="VALIDATION",
                                 error_message="no", payload_hash=op.payload_hash,
                                 permanent=rng.random() < 0.5)
        store.release(phone, run)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_incremental_plans_equal_from_scratch_plans_over_random_edits(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
):
    # Small thresholds, so the rounds run with two workers go through the worker processes.
    monkeypatch.setattr(incremental, "PARALLEL_MIN_ROWS", 8)
    monkeypatch.setattr(incremental, "PARALLEL_CHUNK_ROWS", 5)
    rng = random.Random(seed)
    crm = Crm(tmp_path / "crm.sqlite", rng)
    engine = create_crm_engine(f"sqlite:///{tmp_path / 'crm.sqlite'}")
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    stop = StopSignal()
    compared = 0
    for round_no in range(10):
        region = "GB" if round_no in (6, 7) else "US"
        memberships = load_memberships(engine, MEMBERSHIPS_SQL)
        for groups in (None, frozenset({"vip"}), frozenset({"news", "local"})):
            scope = SyncScope(groups=groups, include_ungrouped=groups is None)
            extra: set[str] = set()
            if groups is not None:
                extra = store.crm_ids_last_sent_with(
                    {GROUPS[g] for g in groups if GROUPS[g]})
            extracted, inc = prepare_incremental(
                batches=raw_contact_batches(engine, CONTACTS_SQL),
                memberships=memberships, scope=scope, extra=extra, cache=RecordCache(store),
                settled_lookup=store.settled_fingerprints, region=region, stop=stop,
                workers=2 if round_no in (0, 6) and groups is None else 1,
            )
            rows = extract(
                memberships=memberships,
                contact_chunks=lambda check, m=memberships: iter_contact_chunks(
                    engine, CONTACTS_SQL, None, memberships=m, between_fetches=check),
                scope=scope, last_sent_with=lambda _ids, e=extra: e, region=region, stop=stop,
            )
            scratch = prepare(rows, region, stop)
            states = store.load_states()
            inc_plan = plan_operations(inc.contacts, states, fingerprints=inc.fingerprints)
            scratch_plan = plan_operations(scratch.contacts, states)

            assert _ops(inc_plan) == _ops(scratch_plan)
            assert {c.phone for c in inc_plan.unchanged} | set(inc.settled) == {
                c.phone for c in scratch_plan.unchanged}
            assert not set(inc.settled) & {c.phone for c in inc.contacts}
            assert [op.contact.phone for op in inc_plan.skipped] == [
                op.contact.phone for op in scratch_plan.skipped]
            assert _rejects(inc.rejects) == _rejects(scratch.rejects)
            assert _rejects(inc.dedupe_rejects) == _rejects(scratch.dedupe_rejects)
            assert sorted(inc.merges, key=repr) == sorted(scratch.merges, key=repr)
            assert len(extracted.records) == len(rows)
            assert inc.accepted == sum(1 for _ in rows) - len(scratch.rejects)
            compared += len(inc_plan.operations) + len(inc_plan.unchanged) + len(inc.settled)
            if groups is None:
                _record_outcomes(store, inc_plan, inc.fingerprints, rng, f"run{round_no}")
        crm.edit(rng.randint(3, 12))
    assert compared > 300  # the comparison covered many contacts, not an empty CRM
    store.close()


def test_an_unchanged_crm_is_neither_normalized_nor_planned_again(tmp_path: Path):
    rng = random.Random(7)
    Crm(tmp_path / "crm.sqlite", rng)
    engine = create_crm_engine(f"sqlite:///{tmp_path / 'crm.sqlite'}")
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    memberships = load_memberships(engine, MEMBERSHIPS_SQL)

    def run(region: str = "US") -> tuple[Any, Any, Any]:
        extracted, prepared = prepare_incremental(
            batches=raw_contact_batches(engine, CONTACTS_SQL), memberships=memberships,
            scope=SyncScope(None, True), extra=set(), cache=RecordCache(store),
            settled_lookup=store.settled_fingerprints, region=region, stop=StopSignal(),
        )
        plan = plan_operations(prepared.contacts, store.load_states(),
                               fingerprints=prepared.fingerprints)
        return extracted, prepared, plan

    first, prepared, first_plan = run()
    assert first.normalized == 60 and first_plan.operations
    for op in first_plan.operations:  # every write confirmed
        store.claim(op.contact.phone, "r1", 60)
        store.record_success(op.contact.phone, "r1", remote_id="c_" + op.contact.phone,
                             payload=op.payload, payload_hash=op.payload_hash,
                             crm_ids=op.contact.crm_ids, created=True, outcome="created",
                             source_fp=op.source_fp)
    again, prepared, plan = run()
    assert again.normalized == 0
    assert prepared.contacts == [] and not plan.operations
    assert sorted(prepared.settled) == sorted(op.contact.phone for op in first_plan.operations)
    assert prepared.merges  # merges are still found (and audited) every run
    other, _, plan = run(region="GB")  # a setting that changes normalization: all done again
    assert other.normalized == 60 and plan.operations
    store.close()


def test_normalizing_on_worker_processes_gives_the_same_results_in_the_same_order(monkeypatch):
    monkeypatch.setattr(incremental, "PARALLEL_MIN_ROWS", 10)
    monkeypatch.setattr(incremental, "PARALLEL_CHUNK_ROWS", 7)
    rng = random.Random(3)
    rows = []
    for i in range(200):
        row = _person(rng, i)
        row.update(crm_id=str(i), title=row.pop("name"))
        rows.append(row)
    cols = list(rows[0])
    items = [(tuple(row[c] for c in cols), row["crm_id"], ()) for row in rows]
    here = normalize_many(cols, items, "US", StopSignal(), workers=1)
    spread = normalize_many(cols, items, "US", StopSignal(), workers=2)
    assert spread == here
    assert here == [normalize_row(to_record(cols, *item), "US") for item in items]
    assert {type(r).__name__ for r in here} == {"Contact", "Reject"}


def _upgrade(change: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Change one input of normalization, as an upgrade of it would."""
    if change == "phonenumbers":
        monkeypatch.setattr(phonenumbers, "__version__", phonenumbers.__version__ + ".post1")
    elif change == "metadata":  # the same version with other metadata files (a patched build)
        patched = tmp_path / "phonenumbers_data"
        shutil.copytree(Path(phonenumbers.data.__file__).parent, patched,
                        ignore=shutil.ignore_patterns("__pycache__"))
        with (patched / "region_GB.py").open("a") as f:
            f.write("\n# a newer numbering plan\n")
        monkeypatch.setattr(phonenumbers.data, "__file__", str(patched / "__init__.py"))
    elif change == "unicode":
        monkeypatch.setattr(unicodedata, "unidata_version", "99.0.0")
    else:
        monkeypatch.setattr(incremental, "RULES_VERSION", incremental.RULES_VERSION + 1)


@pytest.mark.parametrize("change", ["phonenumbers", "metadata", "unicode", "rules"])
def test_a_new_normalization_environment_normalizes_every_stored_record_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
):
    rng = random.Random(11)
    Crm(tmp_path / "crm.sqlite", rng)
    engine = create_crm_engine(f"sqlite:///{tmp_path / 'crm.sqlite'}")
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    memberships = load_memberships(engine, MEMBERSHIPS_SQL)
    before = incremental.fingerprinter(["crm_id", "phone"], "US")(("1", "12"), ())

    def run() -> tuple[Any, Any]:
        return prepare_incremental(
            batches=raw_contact_batches(engine, CONTACTS_SQL), memberships=memberships,
            scope=SyncScope(None, True), extra=set(), cache=RecordCache(store),
            settled_lookup=store.settled_fingerprints, region="US", stop=StopSignal(),
        )

    first, prepared = run()
    invalid = {r.crm_id for r in prepared.rejects if r.reason == "invalid_phone"}
    assert first.normalized == 60 and invalid
    for contact in prepared.contacts:  # every contact sent and settled
        store.claim(contact.phone, "r1", 60)
        store.record_success(contact.phone, "r1", remote_id="c_" + contact.phone,
                             payload={}, payload_hash="h", crm_ids=contact.crm_ids,
                             created=True, outcome="created",
                             source_fp=prepared.fingerprints[contact.phone])
    assert run()[0].normalized == 0

    _upgrade(change, monkeypatch, tmp_path)
    assert incremental.fingerprinter(["crm_id", "phone"], "US")(("1", "12"), ()) != before
    # The new version accepts every number the old one found invalid.
    monkeypatch.setattr(phonenumbers, "is_valid_number", lambda number: True)
    again, prepared = run()
    assert again.normalized == 60  # every cached record normalized again
    assert not invalid & {r.crm_id for r in prepared.rejects}
    accepted = {i for c in prepared.contacts for i in c.crm_ids}
    assert invalid <= accepted  # now planned, as a plan from scratch would
    rows = extract(
        memberships=memberships,
        contact_chunks=lambda check: iter_contact_chunks(
            engine, CONTACTS_SQL, None, memberships=memberships, between_fetches=check),
        scope=SyncScope(None, True), last_sent_with=lambda _ids: set(), region="US",
        stop=StopSignal(),
    )
    assert _rejects(prepare(rows, "US", StopSignal()).rejects) == _rejects(prepared.rejects)
    store.close()


def test_the_order_of_a_records_memberships_does_not_change_its_fingerprint():
    fingerprint = incremental.fingerprinter(["crm_id", "phone"], "US")
    row = ("1", "(415) 555-2000")
    one = fingerprint(row, (("vip", "grp_vip"), ("local", None), ("news", "grp_news")))
    assert one == fingerprint(row, (("news", "grp_news"), ("vip", "grp_vip"), ("local", None)))
    assert one != fingerprint(row, (("vip", "grp_vip"), ("news", "grp_news")))
