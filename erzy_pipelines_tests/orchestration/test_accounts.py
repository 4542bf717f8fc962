"""The state knows whose contacts it describes (issue: going live after the sandbox sent
nothing). Real syncs, one state database kept across them, real sandboxes as accounts."""

from __future__ import annotations

import sqlalchemy as sa

from erzy_pipelines.core.key_id import key_id
from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxConfig, SandboxServer
from erzy_pipelines.sandbox.config import KeySpec
from erzy_pipelines.state import LEGACY_ACCOUNT, StateStore
from erzy_pipelines.state.credentials import known_account
from erzy_pipelines_tests.orchestration.conftest import person

ROTATED_KEY = "ek_test_rotated_key_0002"
LIMITS = ((10_000, 60.0), (100_000, 3600.0))


def _point_at(monkeypatch, h, sandbox: SandboxServer, key: str = DEMO_API_KEY) -> None:
    monkeypatch.setenv("ERZYCALL_BASE_URL", sandbox.base_url)
    monkeypatch.setenv("ERZYCALL_API_KEY", key)
    h.sandbox = sandbox


def test_pointing_the_same_state_at_another_account_sends_everything_there(harness, monkeypatch):
    """The README's path: try the sandbox, then go live. The second ErzyCall (an empty sandbox
    here) gets every contact; no contact is taken as "unchanged" because another account has it."""
    h = harness
    h.add_people(person(i) for i in range(1, 11))
    first = h.sandbox
    assert h.sync()[0] == 0 and len(first.contacts()) == 10

    second = SandboxServer(SandboxConfig(limits=LIMITS)).start()
    try:
        _point_at(monkeypatch, h, second)
        code, summaries = h.sync()
        assert code == 0
        assert len(second.contacts()) == 10 and summaries[0]["created"] == 10
        probes = [r for r in second.request_log if r.method == "GET"]
        assert len(probes) == 3, "three of the first account's contacts were looked for"
        assert "new account: none of the known accounts' contacts were found" in "\n".join(
            e.message for e in h.instance.all_logs(h.last_run_id()) if e.message
        )
        assert h.sync()[1][0]["requests"] == 0  # its own state now: nothing to send

        _point_at(monkeypatch, h, first)  # back to the first account: its state is intact
        mark = len(first.request_log)
        assert h.sync()[1][0]["requests"] == 0 and first.request_log[mark:] == []
    finally:
        second.stop()


def test_a_rotated_key_of_the_same_account_keeps_the_state_for_one_request(
    tmp_path, monkeypatch, harness_factory, sqlite_url
):
    sandbox = SandboxServer(
        SandboxConfig(
            limits=LIMITS, keys={DEMO_API_KEY: KeySpec(), ROTATED_KEY: KeySpec()}
        )
    ).start()
    try:
        h = harness_factory(sqlite_url)
        _point_at(monkeypatch, h, sandbox)
        h.add_people(person(i) for i in range(1, 11))
        assert h.sync()[0] == 0
        with h.state() as store:
            before = store.account

        _point_at(monkeypatch, h, sandbox, ROTATED_KEY)
        mark = len(sandbox.request_log)
        code, summaries = h.sync()
        assert code == 0 and summaries[0]["requests"] == 1 and summaries[0]["unchanged"] == 10
        (probe,) = sandbox.request_log[mark:]
        assert probe.method == "GET" and "/contacts/" in probe.path
        with StateStore(h.state_url) as store:
            assert known_account(store, sandbox.base_url, key_id(ROTATED_KEY)) == before
        assert h.sync()[1][0]["requests"] == 0
    finally:
        sandbox.stop()


def test_a_proxys_404_during_a_key_rotation_fails_the_run_and_decides_nothing(
    tmp_path, monkeypatch, harness_factory, sqlite_url, capsys
):
    """The new key's account probe meets a proxy's 404 (no API envelope): that says nothing
    about the account. The run fails, saying why, registers nothing and sends nothing; once the
    proxy is right, the rotation finds the same account and the contacts stay unchanged."""
    sandbox = SandboxServer(
        SandboxConfig(limits=LIMITS, keys={DEMO_API_KEY: KeySpec(), ROTATED_KEY: KeySpec()})
    ).start()
    try:
        h = harness_factory(sqlite_url)
        _point_at(monkeypatch, h, sandbox)
        h.add_people(person(i) for i in range(1, 11))
        assert h.sync()[0] == 0
        with h.state() as store:
            before = store.account

        _point_at(monkeypatch, h, sandbox, ROTATED_KEY)
        sandbox.faults.proxy_404 = 3
        mark = len(sandbox.request_log)
        code, _ = h.sync()
        assert code == 1
        assert "without the API's NOT_FOUND error" in capsys.readouterr().err
        assert [r.method for r in sandbox.request_log[mark:]] == ["GET"]  # the probe, no write
        with StateStore(h.state_url) as store:
            assert known_account(store, sandbox.base_url, key_id(ROTATED_KEY)) is None

        sandbox.faults.proxy_404 = 0
        code, summaries = h.sync()
        assert code == 0 and summaries[0]["unchanged"] == 10 and summaries[0]["requests"] == 1
        with StateStore(h.state_url) as store:
            assert known_account(store, sandbox.base_url, key_id(ROTATED_KEY)) == before
    finally:
        sandbox.stop()


def test_a_probe_retried_after_429s_counts_every_request_it_made(
    tmp_path, monkeypatch, harness_factory, sqlite_url
):
    """The run's ``requests`` figure counts the probe's retries too (found by the model test:
    a rotation probed through a 429 burst said 1 request for 8)."""
    sandbox = SandboxServer(
        SandboxConfig(limits=LIMITS, keys={DEMO_API_KEY: KeySpec(), ROTATED_KEY: KeySpec()})
    ).start()
    try:
        h = harness_factory(sqlite_url)
        _point_at(monkeypatch, h, sandbox)
        h.add_people(person(i) for i in range(1, 4))
        assert h.sync()[0] == 0
        _point_at(monkeypatch, h, sandbox, ROTATED_KEY)
        sandbox.faults.burst_429 = 2
        mark = len(sandbox.request_log)
        code, summaries = h.sync()
        assert code == 0 and summaries[0]["unchanged"] == 3
        assert [r.status for r in sandbox.request_log[mark:]] == [429, 429, 200]
        assert summaries[0]["requests"] == 3
    finally:
        sandbox.stop()


def test_the_probe_picks_the_contacts_confirmed_last_not_the_ones_touched_last(tmp_path):
    """Claims, failures and deferrals change a contact's row, not what ErzyCall holds: the probe
    asks for the contacts whose writes were confirmed most recently."""
    store = StateStore(f"sqlite:///{tmp_path / 'state.sqlite'}")
    for i, phone in enumerate(["+14155551001", "+14155551002", "+14155551003"]):
        assert store.claim(phone, "r1", 60)
        store.begin_intent(phone, "r1", 1, f"h{i}", f"k{i}")
        store.record_success(
            phone, "r1", remote_id=f"id{i}", payload={"title": "x"}, payload_hash=f"h{i}",
            crm_ids=[str(i)], created=True, outcome="created",
        )
        store.release(phone, "r1")
    # the oldest confirmed contact is claimed and then fails: its row changes, its write does not
    assert store.claim("+14155551001", "r2", 60)
    store.begin_intent("+14155551001", "r2", 2, "h9", "k9")
    store.record_failure(
        "+14155551001", "r2", outcome="failed", error_code="x", error_message="x",
        payload_hash="h9", permanent=False,
    )
    store.release("+14155551001", "r2")
    assert [p for p, _ in store.known_remote_ids(2)] == ["+14155551003", "+14155551002"]


def test_dry_runs_of_two_syncs_with_a_new_key_keep_apart(tmp_path):
    from erzy_pipelines.sync.accounts import UNVERIFIED, unverified

    assert unverified("") == UNVERIFIED
    assert unverified("sales") != unverified("support")
    assert all(len(unverified(n)) <= 32 for n in ("sales", "x" * 64))


def test_a_dry_run_with_an_unknown_key_plans_everything_as_new_and_says_why(harness, monkeypatch):
    h = harness
    h.add_people(person(i) for i in range(1, 4))
    assert h.sync()[0] == 0
    second = SandboxServer(SandboxConfig(limits=LIMITS)).start()
    try:
        _point_at(monkeypatch, h, second)
        code, summaries = h.sync(dry_run=True)
        assert code == 0 and summaries[0]["planned"] == 3 and second.request_log == []
        logs = "\n".join(e.message for e in h.instance.all_logs(h.last_run_id()) if e.message)
        assert "the plan treats every contact as new" in logs
    finally:
        second.stop()


OLD_LAYOUT = """
CREATE TABLE erzy_contact_state (
    phone VARCHAR(20) PRIMARY KEY, remote_id VARCHAR(64), last_payload TEXT,
    last_hash VARCHAR(64), crm_ids TEXT, created_by_sync BOOLEAN NOT NULL,
    last_outcome VARCHAR(32), last_error_code VARCHAR(64), last_error_message TEXT,
    rejected_hash VARCHAR(64), failure_count INTEGER NOT NULL, intent_seq INTEGER NOT NULL,
    pending_hash VARCHAR(64), pending_key VARCHAR(255), pending_run_id VARCHAR(64),
    deferred INTEGER NOT NULL, lease_run_id VARCHAR(64), lease_until FLOAT, updated_at DATETIME
)
"""


def test_a_state_database_from_before_accounts_is_migrated_and_taken_over(harness):
    """A user's months-old state database (contact state keyed by phone alone): the upgrade
    keeps it, the first sync proves it describes this account (1 GET) and sends nothing."""
    h = harness
    h.add_people(person(i) for i in range(1, 6))
    assert h.sync()[0] == 0
    with StateStore(h.state_url) as store, store.engine.begin() as conn:
        rows = conn.execute(sa.text("SELECT * FROM erzy_contacts")).mappings().all()
        conn.execute(sa.text("DROP TABLE erzy_contacts"))
        conn.execute(sa.text("DELETE FROM erzy_account_keys"))
        conn.execute(sa.text(OLD_LAYOUT))
        for row in rows:
            new = ("account_id", "source_fp", "source_read_at", "confirmed_at")
            values = {k: v for k, v in row.items() if k not in new}
            columns = ", ".join(values)
            conn.execute(
                sa.text(f"INSERT INTO erzy_contact_state ({columns}) VALUES "
                        f"({', '.join(':' + c for c in values)})"),
                values,
            )
    mark = len(h.sandbox.request_log)
    code, summaries = h.sync()
    assert code == 0 and summaries[0]["unchanged"] == 5
    assert [r.method for r in h.sandbox.request_log[mark:]] == ["GET"]
    with StateStore(h.state_url) as store, store.engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        legacy = conn.execute(
            sa.text("SELECT count(*) FROM erzy_contacts WHERE account_id = :a"),
            {"a": LEGACY_ACCOUNT},
        ).scalar()
    assert "erzy_contact_state_before_accounts" in tables and "erzy_contact_state" not in tables
    assert legacy == 0, "the legacy state was taken over by the account it describes"


def test_two_runs_meeting_a_new_key_at_once_share_one_account(any_db_url):
    """Three group backfills started together with a key the state has not seen: each finds it
    unknown and registers it. The one that registers second must take the first one's account,
    not keep state of its own (its leases would then not hold the others back, and contacts
    were POSTed twice). Here the second run registers while the first is still probing."""
    from erzy_pipelines.sync.accounts import resolve_account

    base_url = "http://127.0.0.1:9/api/v1"
    with StateStore(any_db_url) as store:
        known = resolve_account(store, base_url, key_id(DEMO_API_KEY), probe=_never)
        store.with_account(known.account_id).insert_baseline(
            [
                {
                    "phone": "+14155550100",
                    "remote_id": "contact_known",
                    "last_payload": {"phone": "+14155550100"},
                    "last_hash": "h",
                    "crm_ids": ["1"],
                    "source_fp": 1,
                }
            ]
        )
        new_key = key_id(ROTATED_KEY)
        other: list = []

        def probe_while_another_run_registers(remote_id: str) -> str | None:
            if not other:  # the other run starts, probes and registers the key meanwhile
                other.append(resolve_account(store, base_url, new_key, probe=lambda _: None))
            return None  # another organization: a new account

        first = resolve_account(store, base_url, new_key, probe=probe_while_another_run_registers)
        assert other[0].note.startswith("new account") and other[0].probes == 1
        assert first.account_id == other[0].account_id != known.account_id
        assert "registered this key and URL first" in first.note and not first.new
        assert known_account(store, base_url, new_key, touch=False) == first.account_id
        with store.engine.connect() as conn:
            ids = conn.execute(sa.text("SELECT account_id FROM erzy_accounts")).scalars().all()
        assert sorted(ids) == sorted([known.account_id, first.account_id]), "no orphan account"


def _never(remote_id: str) -> str | None:
    raise AssertionError("nothing to probe in an empty state database")
