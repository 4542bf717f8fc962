"""The state/audit/run store on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from erzy_pipelines.core.plan import IN_DOUBT, ContactState
from erzy_pipelines.state import LeaseLost, StateStore
from erzy_pipelines.state.schema import ERROR_MESSAGE_MAX

PHONE = "+15551230001"
PAYLOAD = {
    "title": "Zoë Ångström 📞",
    "phone": PHONE,
    "email": None,
    "notes": "n" * 3000,
    "tags": ["vip"],
    "groupIds": ["grp_a", "grp_b"],
    "customFields": {"extension": "12"},
}


@pytest.fixture
def store(any_db_url: str) -> Iterator[StateStore]:
    s = StateStore(any_db_url)
    yield s
    s.close()


def _succeed(store: StateStore, phone: str, run_id: str = "run-a", **overrides) -> None:
    """Claim, then record a success under the lease, as the executor does."""
    assert store.claim(phone, run_id)
    values = dict(remote_id="contact_1", payload=PAYLOAD, payload_hash="h1", crm_ids=["c1"],
                  created=True, outcome="created")
    values.update(overrides)
    store.record_success(phone, run_id, **values)
    store.release(phone, run_id)


def test_round_trip_and_created_by_sync_is_sticky(store: StateStore) -> None:
    _succeed(store, PHONE, crm_ids=["c2", "c1"])
    state = store.load_states([PHONE])[PHONE]
    assert isinstance(state, ContactState)
    assert (state.remote_id, state.last_payload, state.last_hash) == ("contact_1", PAYLOAD, "h1")
    assert (state.last_outcome, state.failure_count, state.deferred) == ("created", 0, False)

    _succeed(store, PHONE, payload={**PAYLOAD, "tags": []}, payload_hash="h2",
             created=False, outcome="updated")
    row = store.state_row(PHONE)
    assert row is not None
    assert row["created_by_sync"] is True
    assert row["crm_ids"] == ["c1"]
    assert row["last_payload"]["tags"] == []
    assert row["updated_at"].tzinfo is not None
    assert store.state_row("+15559999999") is None


def test_load_states_chunks_and_all(store: StateStore) -> None:
    phones = [f"+1555{n:07d}" for n in range(1200)]
    store.record_deferred(phones, "run-1")
    subset = store.load_states(phones[:1100] + ["+19999999999"])
    assert sorted(subset) == phones[:1100]  # unknown phones are absent, not defaulted
    assert all(s.deferred for s in subset.values())
    assert len(store.load_states()) == 1200
    assert store.load_states([]) == {}


def test_claim_is_exclusive_until_released(store: StateStore) -> None:
    assert store.claim(PHONE, "run-a", now=1000.0)
    assert not store.claim(PHONE, "run-b", now=1001.0)
    assert store.claim(PHONE, "run-a", now=1002.0)  # renewing your own lease
    store.release(PHONE, "run-b")  # not the holder: no effect
    assert not store.claim(PHONE, "run-b", now=1003.0)
    store.release(PHONE, "run-a")
    assert store.claim(PHONE, "run-b", now=1004.0)
    assert store.release_all("run-b") == 1
    assert store.state_row(PHONE)["lease_run_id"] is None


def test_lease_expires(store: StateStore) -> None:
    assert store.claim(PHONE, "run-a", lease_seconds=10.0, now=1000.0)
    assert not store.claim(PHONE, "run-b", now=1009.5)
    assert store.claim(PHONE, "run-b", now=1010.5)
    assert not store.claim(PHONE, "run-a", now=1011.0)


def test_concurrent_claims_from_two_engines_never_overlap(any_db_url: str) -> None:
    phones = [f"+1555000{n:04d}" for n in range(40)]
    stores = [StateStore(any_db_url), StateStore(any_db_url)]
    barrier = threading.Barrier(2)

    def work(i: int) -> set[str]:
        barrier.wait()
        order = phones if i == 0 else list(reversed(phones))
        return {p for p in order if stores[i].claim(p, f"run-{i}")}

    try:
        with ThreadPoolExecutor(2) as pool:
            won = list(pool.map(work, range(2)))
    finally:
        for s in stores:
            s.close()
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == set(phones)


def test_intent_then_transient_failure_keeps_pending(store: StateStore) -> None:
    assert store.claim(PHONE, "run-a", now=1000.0)
    store.begin_intent(PHONE, "run-a", 1, "h1", "key-1")
    assert store.load_states([PHONE])[PHONE].pending_hash == "h1"

    store.record_failure(
        PHONE, "run-a", outcome="failed", error_code="INTERNAL_ERROR", error_message="x" * 5000,
        payload_hash="h1", permanent=False,
    )
    row = store.state_row(PHONE)
    assert (row["pending_hash"], row["pending_key"], row["pending_run_id"]) == (
        "h1", "key-1", "run-a",
    )
    assert row["failure_count"] == 1 and row["rejected_hash"] is None
    assert len(row["last_error_message"]) == ERROR_MESSAGE_MAX
    assert store.backlog() == 1

    # Another run may not start a write while run-a holds the lease.
    with pytest.raises(LeaseLost):
        store.begin_intent(PHONE, "run-b", 2, "h1", "key-2")
    assert store.state_row(PHONE)["pending_key"] == "key-1"

    store.record_success(
        PHONE, "run-a", remote_id="contact_9", payload=PAYLOAD, payload_hash="h1",
        crm_ids=["c1"], created=True, outcome="created",
    )
    state = store.load_states([PHONE])[PHONE]
    assert (state.pending_hash, state.failure_count, state.intent_seq) == (None, 0, 1)
    assert store.backlog() == 0


def test_every_write_about_a_contact_is_fenced_by_its_lease(store: StateStore) -> None:
    """A run whose lease was taken over writes nothing: not its intent, not its outcome."""
    assert store.claim(PHONE, "run-a", lease_seconds=10.0, now=1000.0)
    store.begin_intent(PHONE, "run-a", 1, "h1", "key-1")
    assert store.claim(PHONE, "run-b", now=1011.0)  # run-a's lease ran out: run-b takes over
    store.begin_intent(PHONE, "run-b", 2, "h2", "key-2")
    store.record_success(
        PHONE, "run-b", remote_id="c_b", payload=PAYLOAD, payload_hash="h2", crm_ids=["c1"],
        created=True, outcome="created",
    )
    for write in (
        lambda: store.begin_intent(PHONE, "run-a", 1, "h1", "key-1"),
        lambda: store.record_success(
            PHONE, "run-a", remote_id="c_a", payload={}, payload_hash="h1", crm_ids=[],
            created=True, outcome="created",
        ),
        lambda: store.record_failure(
            PHONE, "run-a", outcome="failed", error_code=None, error_message=None,
            payload_hash="h1", permanent=True,
        ),
    ):
        with pytest.raises(LeaseLost):
            write()
    row = store.state_row(PHONE)
    assert (row["remote_id"], row["last_hash"], row["rejected_hash"]) == ("c_b", "h2", None)
    # What run-a sent anyway leaves the contact in doubt, so the next plan checks every field.
    store.mark_in_doubt(PHONE, "run-a", "key-1")
    assert store.load_states([PHONE])[PHONE].pending_hash == IN_DOUBT


def test_renewing_keeps_a_lease_and_tells_when_it_was_lost(store: StateStore) -> None:
    assert store.claim(PHONE, "run-a", lease_seconds=10.0, now=1000.0)
    assert store.renew("run-a", 10.0, now=1009.0) == 1  # until 1019
    assert not store.claim(PHONE, "run-b", now=1015.0)
    assert store.claim(PHONE, "run-b", now=1020.0)
    assert store.renew("run-a", 10.0, now=1021.0) == 0  # lost: nothing renewed


def test_permanent_failure_sets_rejected_hash(store: StateStore) -> None:
    assert store.claim(PHONE, "run-a")
    store.begin_intent(PHONE, "run-a", 3, "bad", "key-3")
    store.record_failure(
        PHONE, "run-a", outcome="rejected", error_code="VALIDATION_ERROR",
        error_message="bad email", payload_hash="bad", permanent=True,
    )
    state = store.load_states([PHONE])[PHONE]
    assert (state.rejected_hash, state.pending_hash, state.failure_count) == ("bad", None, 1)
    assert state.intent_seq == 3
    assert store.backlog() == 0  # rejected for good: nothing owed until the data changes


def test_a_refused_idempotency_key_leaves_the_contact_in_doubt_under_no_key(store) -> None:
    assert store.claim(PHONE, "run-a")
    store.begin_intent(PHONE, "run-a", 3, "h", "key-3")
    store.record_failure(
        PHONE, "run-a", outcome="failed", error_code="IDEMPOTENCY_MISMATCH", error_message="x",
        payload_hash="h", permanent=False, new_intent=True,
    )
    row = store.state_row(PHONE)
    assert (row["pending_hash"], row["pending_key"], row["intent_seq"]) == (IN_DOUBT, None, 3)


def test_backlog_counts_deferred_pending_and_failed(store: StateStore) -> None:
    store.record_deferred(["+15550000001", "+15550000002"], "run-a")
    assert store.claim("+15550000003", "run-a")
    store.begin_intent("+15550000003", "run-a", 1, "h", "k")
    for phone, permanent in (("+15550000004", False), ("+15550000005", True)):
        assert store.claim(phone, "run-a")
        store.record_failure(
            phone, "run-a", outcome="failed", error_code=None, error_message="no",
            payload_hash="h", permanent=permanent,
        )
    assert store.backlog() == 4
    _succeed(store, "+15550000001", run_id="run-b")
    assert store.backlog() == 3


def test_each_account_has_its_own_contact_state(store: StateStore) -> None:
    a, b = store.with_account("acct-a"), store.with_account("acct-b")
    _succeed(a, PHONE)
    assert a.load_states([PHONE])[PHONE].remote_id == "contact_1"
    assert b.load_states([PHONE]) == {} and b.state_row(PHONE) is None
    assert b.claim(PHONE, "run-b")  # the same phone in another account is another contact
    assert a.known_remote_ids() == [(PHONE, "contact_1")] and b.known_remote_ids() == []
    b.add_audit([{"run_id": "r1", "phone": PHONE, "action": "create", "outcome": "created"}])
    with store.engine.connect() as conn:
        account = conn.exec_driver_sql("SELECT account_id FROM erzy_sync_audit").scalar()
    assert account == "acct-b"


def test_deferring_gives_up_own_lease(store: StateStore) -> None:
    assert store.claim(PHONE, "run-a", now=1000.0)
    store.record_deferred([PHONE], "run-a")
    assert store.claim(PHONE, "run-b", now=1001.0)


def test_audit_rows(store: StateStore) -> None:
    store.add_audit([
        {"run_id": "r1", "partition_key": "vip", "crm_ids": ["c1", "c2"], "phone": PHONE,
         "action": "create", "outcome": "created", "http_status": 201, "attempts": 1,
         "remote_id": "contact_1", "payload_hash": "h1"},
        {"run_id": "r1", "crm_ids": "c3", "phone": "+1 (555) 123-4567 ext. 89 " * 5,
         "action": "reject", "outcome": "rejected", "error_code": "invalid_phone",
         "error_message": "é" * 3000},
    ])
    store.add_audit([{"run_id": "r2", "phone": PHONE, "action": "update", "outcome": "failed"}])

    rows = store.audit_rows()
    assert [r["run_id"] for r in rows] == ["r2", "r1", "r1"]  # newest first
    reject, create = store.audit_rows(run_id="r1")
    assert create["crm_ids"] == '["c1","c2"]' and create["http_status"] == 201
    assert reject["crm_ids"] == "c3"
    assert len(reject["error_message"]) == ERROR_MESSAGE_MAX
    assert len(reject["phone"]) == 64
    assert create["created_at"].tzinfo == UTC
    assert len(store.audit_rows(limit=1)) == 1
    with pytest.raises(ValueError, match="unknown audit fields"):
        store.add_audit([{"run_id": "r3", "api_key": "nope"}])


def test_runs_table(store: StateStore) -> None:
    assert store.last_run() is None
    store.start_run("run-1", "vip", dry_run=True)
    first = store.last_run()
    store.start_run("run-1", "all", dry_run=False)  # a retried run is reopened, not duplicated
    store.finish_run("run-1", {"created": 2, "requests": 3}, "success")
    store.start_run("run-2", None, dry_run=False)

    newest, older = store.runs(limit=10)
    assert newest["run_id"] == "run-2" and newest["status"] == "running"
    assert older["run_id"] == "run-1"
    assert (older["partition_key"], older["dry_run"], older["status"]) == ("all", False, "success")
    assert (older["created"], older["requests"], older["failed"]) == (2, 3, 0)
    assert older["started_at"] == first["started_at"]
    assert timedelta(0) <= older["finished_at"] - older["started_at"] < timedelta(minutes=1)
    assert store.last_run()["run_id"] == "run-2"
    with pytest.raises(ValueError, match="unknown run counts"):
        store.finish_run("run-2", {"bogus": 1}, "failed")


def test_sqlite_uses_wal(sqlite_url: str) -> None:
    store = StateStore(sqlite_url)
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        store.close()


def test_store_reuses_a_given_engine(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    store = StateStore(engine)
    store.record_deferred([PHONE], "run-a")
    store.close()  # not ours to dispose
    assert StateStore(engine).load_states()[PHONE].deferred
    engine.dispose()


def _tables_before_accounts() -> sa.MetaData:
    """The state tables as an earlier version created them (contact state keyed by phone)."""
    from erzy_pipelines.state.schema import TABLE_OPTIONS, UtcDateTime, sync_audit, sync_runs

    meta = sa.MetaData()
    sa.Table(
        "erzy_contact_state", meta,
        sa.Column("phone", sa.String(20), primary_key=True),
        sa.Column("remote_id", sa.String(64)),
        sa.Column("last_payload", sa.Text()),
        sa.Column("last_hash", sa.String(64)),
        sa.Column("crm_ids", sa.Text()),
        sa.Column("created_by_sync", sa.Boolean(), nullable=False, default=False),
        sa.Column("failure_count", sa.Integer(), nullable=False, default=0),
        sa.Column("intent_seq", sa.Integer(), nullable=False, default=0),
        sa.Column("deferred", sa.Integer(), nullable=False, default=0),
        sa.Column("updated_at", UtcDateTime()),
        **TABLE_OPTIONS,
    )
    for table in (sync_audit, sync_runs):  # as today, but without account_id
        columns = [c._copy() for c in table.columns if c.name != "account_id"]
        sa.Table(table.name, meta, *columns, **TABLE_OPTIONS)
    return meta


def test_a_state_database_from_before_accounts_is_migrated(any_db_url: str) -> None:
    from datetime import datetime

    from erzy_pipelines.state import LEGACY_ACCOUNT

    engine = sa.create_engine(any_db_url)
    old = _tables_before_accounts()
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.tables["erzy_contact_state"].insert(), [{
            "phone": PHONE, "remote_id": "contact_7", "last_payload": '{"title": "Ann"}',
            "last_hash": "h7", "crm_ids": '["c7"]', "created_by_sync": True,
            "failure_count": 0, "intent_seq": 2, "deferred": 0,
            "updated_at": datetime.now(UTC),
        }])
    engine.dispose()
    for _ in range(2):  # a second start finds nothing left to do
        with StateStore(any_db_url) as store:
            legacy = store.with_account(LEGACY_ACCOUNT).load_states()
            assert legacy[PHONE].remote_id == "contact_7" and legacy[PHONE].intent_seq == 2
            assert store.load_states() == {}  # the default account has nothing
            tables = set(sa.inspect(store.engine).get_table_names())
            assert {"erzy_contacts", "erzy_contact_state_before_accounts"} <= tables
            assert "erzy_contact_state" not in tables
            for table in ("erzy_sync_audit", "erzy_sync_runs"):
                columns = {c["name"] for c in sa.inspect(store.engine).get_columns(table)}
                assert "account_id" in columns, table
            store.start_run("r1", "all", dry_run=False)


def test_a_state_database_from_before_fingerprints_gets_source_fp(any_db_url: str) -> None:
    """A state database written by the previous release (``erzy_contacts`` without
    ``source_fp``, no ``erzy_crm_records``): the upgrade adds both, keeps every row, and its
    contacts are simply not settled until a run has confirmed them once."""
    from erzy_pipelines.state.schema import TABLE_OPTIONS, contact_state

    engine = sa.create_engine(any_db_url)
    meta = sa.MetaData()
    columns = [c._copy() for c in contact_state.columns if c.name != "source_fp"]
    old = sa.Table(contact_state.name, meta, *columns, **TABLE_OPTIONS)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(old.insert(), [{
            "account_id": "default", "phone": PHONE, "remote_id": "contact_7",
            "last_payload": '{"title": "Ann"}', "last_hash": "h7", "crm_ids": '["c7"]',
            "created_by_sync": True, "failure_count": 0, "intent_seq": 2, "deferred": 0,
        }])
    engine.dispose()
    for _ in range(2):  # a second start finds nothing left to do
        with StateStore(any_db_url) as store:
            tables = set(sa.inspect(store.engine).get_table_names())
            assert "erzy_crm_records" in tables
            assert store.load_states()[PHONE].remote_id == "contact_7"
            assert store.settled_fingerprints() == {}  # not settled: no fingerprint yet
    with StateStore(any_db_url) as store:
        store.mark_settled([(PHONE, "h7", 12345)])
        assert store.settled_fingerprints() == {PHONE: 12345}
        store.mark_settled([(PHONE, "another hash", 999)])  # a stale plan changes nothing
        assert store.settled_fingerprints([PHONE]) == {PHONE: 12345}


def test_a_state_database_from_before_namespaces_gets_them_and_keeps_its_accounts(
    any_db_url: str,
) -> None:
    """``erzy_accounts`` without ``namespace`` and ``erzy_sync_runs`` without the ``drift_*``
    counts (the previous release): the upgrade adds them; existing accounts belong to the
    environment-variable sync's namespace ("") and old runs count no drift."""
    from erzy_pipelines.state.schema import TABLE_OPTIONS, accounts, sync_runs

    engine = sa.create_engine(any_db_url)
    meta = sa.MetaData()
    old_accounts = sa.Table(
        accounts.name, meta, *[c._copy() for c in accounts.columns if c.name != "namespace"],
        **TABLE_OPTIONS,
    )
    old_runs = sa.Table(
        sync_runs.name, meta,
        *[c._copy() for c in sync_runs.columns if not c.name.startswith("drift_")],
        **TABLE_OPTIONS,
    )
    meta.create_all(engine)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(old_accounts.insert(), [{"account_id": "a1", "label": "u", "created_at": now}])
        old_run = {"run_id": "r0", "started_at": now, "status": "ok", "dry_run": False}
        conn.execute(old_runs.insert(), [{**old_run, "created": 3}])
    engine.dispose()
    for _ in range(2):
        with StateStore(any_db_url) as store, store.engine.connect() as conn:
            row = conn.execute(sa.select(accounts)).mappings().one()
            assert (row["account_id"], row["namespace"]) == ("a1", "")
            run = conn.execute(sa.select(sync_runs)).mappings().one()
            assert (run["created"], run["drift_deleted"], run["drift_edited"]) == (3, 0, 0)


def test_the_record_cache_round_trips_on_every_backend(any_db_url: str) -> None:
    from erzy_pipelines.core.normalize import Contact, Reject
    from erzy_pipelines.state.record_cache import RecordCache

    ann = Contact(
        phone=PHONE, title="Ann ✓", email=None, notes="line\nbreak", tags=("a", "b"),
        group_ids=("grp_vip",), group_keys=("vip",), custom_fields=(("company", "Acme"),),
        crm_ids=("c1",), updated_at="2026-01-01T00:00:00+00:00", warnings=("title_truncated",),
    )
    bad = Reject("c2", "invalid_phone", "not a valid number for US", "555")
    with StateStore(any_db_url) as store:
        cache = RecordCache(store.with_account("acct"))
        cache.save({"c1": (2**62 + 5, ann, None), "c2": (7, bad, None)})
        known, rejects = cache.load()
        assert known == {"c1": (2**62 + 5, PHONE), "c2": (7, None)}
        assert rejects == {"c2": bad}
        assert cache.contacts(["c1", "c2"]) == {"c1": (2**62 + 5, ann)}
        assert RecordCache(store.with_account("other")).load() == ({}, {})  # per account

        moved = Contact(**{**{f: getattr(ann, f) for f in ann.__slots__}, "title": "Ann B"})
        cache.save({"c1": (8, moved, None)}, vanished=["c2"])  # replaced in place, c2 forgotten
        assert cache.load() == ({"c1": (8, PHONE)}, {})
        assert cache.contacts(["c1"]) == {"c1": (8, moved)}


def test_a_lease_is_confirmed_for_the_contact_being_sent_not_for_any_the_run_holds(tmp_path):
    """Run A holds X's lease; Y's lease expired and run B took it. Confirming before sending Y
    must fail for A, although A still holds *a* lease (X's)."""
    from erzy_pipelines.state import LeaseLost
    from erzy_pipelines.sync.lease_keeper import LeaseKeeper

    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    x, y = "+14155551001", "+14155551002"
    assert store.claim(x, "A", 60) and store.claim(y, "A", 60, now=time.time() - 120)
    assert store.claim(y, "B", 60)  # A's lease on Y had expired
    keeper = LeaseKeeper(store, "A", 60)
    keeper.hold(x)
    keeper.confirm()  # X is still A's
    keeper.hold(y)
    with pytest.raises(LeaseLost):
        keeper.confirm()
