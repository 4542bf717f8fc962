"""The fault matrix: break the network, the API, the process and the databases on purpose, then
compare ErzyCall's contacts field by field with what the CRM says they should be.

Every scenario ends with :meth:`FaultLab.check`: the sandbox's contacts against an expectation
computed independently from the CRM tables (none missing, none twice, no wrong field or group),
nothing in ErzyCall the state database does not know about, the state equal to ErzyCall after
the final run, and the audit of every run accounting for each CRM contact in its scope exactly
once (audit rows + the runs row's unchanged count, counters adding up to the scope). Each
scenario records a row of the table printed at the end of the session (``make faults``).

The sandbox runs *strict* here: it does not refuse a second contact with the same phone (the
real API answers 409 and the sync would adopt). So a duplicate can only be prevented by the sync
itself, and a broken guarantee shows up as a duplicate rather than being absorbed by a 409.
In-process runs use the shipped retry loop with short backoff sleeps (Retry-After is honoured).

How each scenario was shown able to fail: the ``test_control_*`` tests run the same scenario
with its guarantee switched off and assert that the checker goes red (second table):

- every / half the responses lost, latency past the timeout: the client sends a fresh
  Idempotency-Key on every attempt → the retried writes create duplicates.
- 30 % server errors, 429 burst: one attempt per request, no retries → contacts missing or
  stale after the run.
- API unreachable mid-run: transient failures recorded as permanent rejections → the rerun
  skips them → missing.
- SIGKILL mid-run: the killed run's pending intent is forgotten (as if the intent were not
  committed before the send) → the rerun sends the in-flight contact under a new key → duplicate.
- CRM unreachable: the connection error rendered with the password → the checker finds it.
- state database down (a real PostgreSQL outage: connections refused and killed): the send
  goes ahead although the intent could not be committed, with the shared rate limiter (same
  database) kept in memory so it cannot refuse the send by itself → a contact in ErzyCall the
  state knows nothing about.
- key revoked / scope missing: 401/403 not treated as fatal → requests after the refusal.
- the audit accounting: deferred contacts left out of the audit → the run no longer accounts
  for its scope.
- overlapping syncs at once: leases and the re-check under the lease switched off → the shared
  contacts cost two write requests each.
- the field-by-field comparison: a group changed in ErzyCall behind the sync's back → wrong.
- state DB blip recovered by the step retry: shown red against the code before this suite's fix
  (the retried step counted the first attempt's 8 creations as "unchanged"; the checker said
  "accounts for 32 contacts (counters 24), scope has 24").
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import types
import uuid
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from erzy_pipelines.core.key_id import key_id
from erzy_pipelines.crm import extract as crm_extract
from erzy_pipelines.erzycall import errors
from erzy_pipelines.erzycall.ratelimit import InMemoryRateLimitStore
from erzy_pipelines.erzycall.transport import Transport
from erzy_pipelines.orchestration import resources
from erzy_pipelines.orchestration.assets import sync as sync_assets
from erzy_pipelines.sandbox import DEMO_API_KEY
from erzy_pipelines.state import AUDIT_FIELDS, StateStore
from erzy_pipelines.state import schema as state_module
from erzy_pipelines.sync import send as upsert
from erzy_pipelines.sync.lease_keeper import LeaseKeeper
from erzy_pipelines_tests.conftest import PG_ADMIN_URL
from erzy_pipelines_tests.faults import report
from erzy_pipelines_tests.faults.conftest import FAST_RETRY
from erzy_pipelines_tests.faults.lab import FaultLab, N, Verdict, phones_of

pytestmark = pytest.mark.faults

GOOD_KEY = "ek_test_fault_matrix_rotated_key_0002"


def control(scenario: str, disabled: str, found: str, red: bool) -> None:
    """Record a negative control's row, then require that the checker went red."""
    report.record_control(
        report.ControlRow(scenario, disabled, found, "red, as it must" if red else "NOT RED")
    )
    assert red, f"{scenario}: with {disabled} the checker still passed: {found}"


# --------------------------------------------------------------------------- guarantee breakers


def fresh_key_per_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break idempotency: every HTTP attempt carries a key never seen before."""
    real_send = Transport.send

    def send(self, method, path, *, params=None, content=None, idempotency_key=None):
        if idempotency_key is not None:
            idempotency_key = f"{idempotency_key[:200]}-{uuid.uuid4().hex}"
        return real_send(
            self, method, path, params=params, content=content, idempotency_key=idempotency_key
        )

    monkeypatch.setattr(Transport, "send", send)


def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from erzy_pipelines.erzycall import client as client_module

    # one attempt, and no wait: a 429 is otherwise waited out whatever the attempt count
    monkeypatch.setattr(
        client_module, "RetryPolicy", lambda: FAST_RETRY(max_attempts=1, max_total_wait=0.0)
    )


def auth_errors_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break the stop on 401/403: the executor no longer recognises them."""

    class Never(Exception):
        pass

    view = types.SimpleNamespace(**vars(errors))
    view.AuthenticationError = view.PermissionDeniedError = Never
    monkeypatch.setattr(upsert, "errors", view)


# --------------------------------------------------------------------------- helpers


def requests_after_first(lab: FaultLab, status: int, since: int) -> int:
    log = lab.log()[since:]
    first = next((i for i, r in enumerate(log) if r.status == status), None)
    assert first is not None, f"no {status} was seen"
    return len(log) - first - 1


def write_requests_per_phone(lab: FaultLab, since: int = 0) -> Counter[str]:
    writes = [r for r in lab.writes(since) if r.status < 300 or r.lost]
    return Counter(phones_of(writes, lab.sandbox.contacts()))


# --------------------------------------------------------------------------- lost responses


def lost_responses(lab: FaultLab, rate: float = 1.0) -> tuple[int, int, Verdict]:
    """Writes are committed, then their connection closes without an answer."""
    lab.populate()
    lab.sandbox.faults.lose_response_rate = rate
    code, _ = lab.sync()
    lab.sandbox.faults.lose_response_rate = 0.0
    rerun, _ = lab.sync()
    return code, rerun, lab.check()


def test_every_response_lost_after_the_write_then_rerun(lab, capsys):
    code, rerun, v = lost_responses(lab)
    lab.record("every write's response lost", v)
    assert code == 1, "a run whose every answer was lost must end with failures"
    # Every answer lost looks like an API that is down: the run stops after UNAVAILABLE_AFTER
    # contacts (each tried 6 times under one key) and defers the rest.
    assert "ErzyCall API is unavailable" in capsys.readouterr().err
    assert rerun == 0
    assert v.ok, v.explain()
    assert lab.stats()["writes"] == N, "a contact was written more than once"
    assert lab.stats()["replays"] == upsert.UNAVAILABLE_AFTER * 6


def test_half_the_responses_lost(lab):
    code, rerun, v = lost_responses(lab, rate=0.5)
    lab.record("half the write responses lost", v)
    assert rerun == 0
    assert v.ok, v.explain()
    assert lab.stats()["writes"] == N, "a contact was written more than once"
    assert lab.stats()["lost_responses"] > N / 4 and lab.stats()["replays"] > 0


def test_control_lost_responses_without_idempotency_keys(lab, monkeypatch):
    fresh_key_per_attempt(monkeypatch)
    _, _, v = lost_responses(lab)
    control(
        "every write's response lost",
        "idempotency key (fresh per attempt)",
        f"{v.duplicated} duplicates",
        v.duplicated > 0,
    )


# --------------------------------------------------------------------------- server errors, 429s


def server_errors(lab: FaultLab) -> Verdict:
    lab.populate()
    lab.sandbox.faults.error_rate = 0.3
    lab.sync()
    for i in range(1, N + 1, 4):
        lab.h.update_person(i, notes=f"changed {i}", tags="customer,changed")
    lab.sync()
    return lab.check()


def test_server_errors_on_30_percent_of_requests(lab):
    v = server_errors(lab)
    mark = len(lab.log())
    code, _ = lab.sync()
    lab.record("500 on 30% of requests", v)
    assert code == 0 and lab.writes(mark) == [], "a rerun with no CRM change must send nothing"
    assert v.ok, v.explain()
    assert lab.stats()["status_500"] > 0
    assert lab.stats()["writes"] == N + len(range(1, N + 1, 4))


def test_control_server_errors_without_retries(lab, monkeypatch):
    no_retries(monkeypatch)
    v = server_errors(lab)
    control(
        "500 on 30% of requests",
        "retries (1 attempt)",
        f"{v.missing} missing, {v.wrong} wrong",
        bool(v.missing or v.wrong),
    )


BURST = 3


def burst_of_429s(lab: FaultLab) -> tuple[int, Verdict]:
    lab.populate()
    lab.sandbox.faults.burst_429 = BURST  # each 429 says Retry-After: 1
    code, _ = lab.sync()
    return code, lab.check()


def test_burst_of_429s(lab):
    code, v = burst_of_429s(lab)
    lab.record("burst of 429s", v)
    assert code == 0
    assert v.ok, v.explain()
    assert lab.stats()["rate_limited"] == BURST


def test_control_burst_of_429s_without_retries(lab, monkeypatch):
    no_retries(monkeypatch)
    _, v = burst_of_429s(lab)
    control("burst of 429s", "retries (1 attempt)", f"{v.missing} missing", v.missing > 0)


# --------------------------------------------------------------------------- latency > timeout

# Wide apart, so that on a loaded machine a request is slow only when the fault says so.
TIMEOUT, LATENCY = 0.5, 1.0
LATENCY_SCENARIO = f"latency {LATENCY:g}s > timeout {TIMEOUT:g}s"


def latency_past_timeout(lab: FaultLab, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Verdict]:
    monkeypatch.setenv("ERZYCALL_TIMEOUT_SECONDS", str(TIMEOUT))
    lab.populate()
    # 12 % of requests (seeded: the same 7 on every run) outlast the client's timeout.
    lab.sandbox.faults.latency, lab.sandbox.faults.latency_rate = LATENCY, 0.12
    code, _ = lab.sync()
    lab.sandbox.faults.latency = 0.0
    lab.settle(LATENCY + 0.2)  # abandoned requests still finish server-side
    return code, lab.check()


def test_latency_spikes_past_the_client_timeout(lab, monkeypatch):
    code, v = latency_past_timeout(lab, monkeypatch)
    lab.record(LATENCY_SCENARIO, v)
    assert code == 0
    assert v.ok, v.explain()
    assert lab.slow > 0
    assert lab.stats()["writes"] == N


def test_control_timeouts_without_idempotency_keys(lab, monkeypatch):
    fresh_key_per_attempt(monkeypatch)
    _, v = latency_past_timeout(lab, monkeypatch)
    control(
        LATENCY_SCENARIO,
        "idempotency key (fresh per attempt)",
        f"{v.duplicated} duplicates",
        v.duplicated > 0,
    )


# --------------------------------------------------------------------------- API unreachable


def api_down_mid_run(lab: FaultLab, k: int = 8) -> tuple[int, list[dict], Verdict, Verdict]:
    lab.populate()
    stopping = threading.Event()

    def stop_after_k_writes(req: Any, resp: Any) -> None:
        created = req.method == "POST" and resp.status == 201
        if created and not stopping.is_set() and lab.stats()["writes"] >= k:
            stopping.set()
            threading.Thread(target=lab.stop_sandbox, daemon=True).start()

    lab.after_request.append(stop_after_k_writes)
    code, summaries = lab.sync()
    lab.after_request.clear()
    lab.notes.append("API down×1")
    lab.restart_sandbox()
    during = lab.check(final=False)
    rerun, _ = lab.sync()
    assert rerun == 0
    return code, summaries, during, lab.check()


def test_api_unreachable_mid_run_then_restarted(lab, capsys):
    code, summaries, during, v = api_down_mid_run(lab)
    lab.record("API unreachable mid-run", v)
    assert code == 1 and summaries[0]["status"] == "FAILED", "the run must fail, not pass"
    assert "ErzyCall API is unavailable" in capsys.readouterr().err
    # It stops after UNAVAILABLE_AFTER operations failed in a row; the rest are deferred.
    first_run = lab.store.runs()[-1]
    assert first_run["status"] == "aborted"
    assert first_run["failed"] <= upsert.UNAVAILABLE_AFTER + 1, first_run
    assert first_run["deferred"] > 0, first_run
    assert during.missing > 0 and not during.duplicated and not during.wrong, during.explain()
    assert v.ok, v.explain()
    assert lab.stats()["writes"] == N


def test_control_api_unreachable_with_failures_recorded_as_permanent(lab, monkeypatch):
    real_failed = upsert._Executor._failed

    def failed(self, op, result, exc, *, permanent):
        return real_failed(self, op, result, exc, permanent=True)

    monkeypatch.setattr(upsert._Executor, "_failed", failed)
    _, _, _, v = api_down_mid_run(lab)
    control(
        "API unreachable mid-run",
        "transient failures kept for retry",
        f"{v.missing} missing after the rerun",
        v.missing > 0,
    )


# --------------------------------------------------------------------------- SIGKILL

KILL_AT_WRITE = 7


def killed_mid_run(lab: FaultLab, forget_intent: bool = False) -> dict[str, Any]:
    """A real ``python -m erzy_pipelines.cli sync`` process, killed with SIGKILL while its
    KILL_AT_WRITE-th write is inside the API (received, not yet answered): the sandbox holds
    that request until the process is dead, then lets it land."""
    lab.populate()
    in_flight, killed, landed = threading.Event(), threading.Event(), threading.Event()
    posts = Counter()
    held: list[Any] = []
    lock = threading.Lock()

    def hold_kth_post(req: Any) -> None:
        if req.method == "POST" and req.path.endswith("/contacts"):
            with lock:
                posts["n"] += 1
                kth = posts["n"] == KILL_AT_WRITE
            if kth:
                held.append(req)
                in_flight.set()
                killed.wait(120)  # answered only after its client is dead

    def note_landed(req: Any, resp: Any) -> None:
        if held and req is held[0]:
            landed.set()

    lab.before_request.append(hold_kth_post)
    lab.after_request.append(note_landed)
    proc, out = lab.spawn("sync", name="killed")
    try:
        assert in_flight.wait(120), "the sync never reached its 7th write:\n" + out.read_text()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        killed.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert landed.wait(30), "the held write never landed"
    lab.before_request.remove(hold_kth_post)
    lab.after_request.remove(note_landed)
    lab.notes.append("SIGKILL×1")
    sent_before = {
        p: r.idempotency_key
        for p, r in zip(phones_of(lab.writes(), lab.sandbox.contacts()), lab.writes(), strict=True)
    }
    present_before = {c["phone"] for c in lab.sandbox.contacts()}
    pending = [s for s in lab.store.load_states().values() if s.pending_hash]
    lab.use_dagster_home(lab.tmp_path / "dagster_home_killed")  # rerun as the user would
    if forget_intent:
        with lab.store.engine.begin() as conn:
            conn.execute(
                state_module.contact_state.update().values(pending_hash=None, pending_key=None)
            )
    mark = len(lab.log())
    writes_before = lab.stats()["writes"]
    rerun, summaries = lab.sync()
    after_rerun = lab.check(final=False)
    leases = lab.age_leases()
    final_run, _ = lab.sync()
    return {
        "rerun": rerun,
        "summaries": summaries,
        "after_rerun": after_rerun,
        "leases": leases,
        "final_run": final_run,
        "verdict": lab.check(),
        "sent_before": sent_before,
        "present_before": present_before,
        "pending": pending,
        "mark": mark,
        "writes_before": writes_before,
    }


def test_sync_process_killed_with_sigkill_then_rerun(lab):
    r = killed_mid_run(lab)
    v: Verdict = r["verdict"]
    lab.record("sync process SIGKILLed mid-run", v)
    assert len(r["present_before"]) == KILL_AT_WRITE  # the held write landed after the kill
    assert len(r["pending"]) == 1, "the killed run's in-flight intent must be committed"
    assert r["rerun"] == 0 and r["final_run"] == 0
    # The rerun (same DAGSTER_HOME) saw the killed run's process was gone, marked it failed and
    # took back its lease: the in-flight contact was retried at once, with the same key.
    assert r["leases"] == 0
    assert r["after_rerun"].ok, r["after_rerun"].explain()
    assert v.ok, v.explain()
    # Already-sent contacts were not sent again: a later write for one of them could only be
    # the in-flight one, under the key the killed process used (so the API replayed it).
    later = lab.writes(r["mark"])
    for phone, rec in zip(phones_of(later, lab.sandbox.contacts()), later, strict=True):
        if phone in r["present_before"]:
            assert rec.idempotency_key == r["sent_before"][phone], f"{phone} was sent again"
    assert lab.stats()["writes"] == N


def test_control_sigkill_with_the_intent_forgotten(lab):
    r = killed_mid_run(lab, forget_intent=True)
    v: Verdict = r["verdict"]
    control(
        "sync process SIGKILLed mid-run",
        "intent committed before the send",
        f"{v.duplicated} duplicate(s)",
        v.duplicated > 0,
    )


# --------------------------------------------------------------------------- CRM unreachable

CRM_PASSWORD = "crm-S3cret-pw"


def crm_unreachable(
    lab: FaultLab, monkeypatch: pytest.MonkeyPatch, capsys
) -> tuple[int, list[dict], str, int]:
    """(exit code, run summaries, everything printed, the port nobody listens on)."""
    import socket

    lab.populate()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "CRM_DATABASE_URL", f"postgresql+psycopg://crm_reader:{CRM_PASSWORD}@127.0.0.1:{port}/crm"
    )
    capsys.readouterr()  # only what this sync prints
    code, summaries = lab.sync()
    captured = capsys.readouterr()
    return code, summaries, captured.out + captured.err, port


def test_crm_database_unreachable(lab, monkeypatch, capsys):
    code, summaries, text, port = crm_unreachable(lab, monkeypatch, capsys)
    lab.notes.append("CRM down×1")
    sent, runs = lab.stats()["requests"], lab.store.runs()
    monkeypatch.setenv("CRM_DATABASE_URL", lab.h.crm_url)  # the CRM is back
    rerun, _ = lab.sync()
    v = lab.check()
    leaked = CRM_PASSWORD in text
    lab.record("CRM database unreachable", v, result="ok" if v.ok and not leaked else "FAIL")
    # Found before any run starts: exit code 2, no run, one line that says what to fix, with
    # the database named and the password masked. No traceback, nothing sent.
    assert (code, summaries) == (2, []), text
    error_lines = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "Traceback" not in text, text
    line = error_lines[0]
    assert line.startswith(
        "error: CRM_DATABASE_URL: cannot connect to the CRM database "
        f"postgresql+psycopg://crm_reader:***@127.0.0.1:{port}/crm: "
    ), line
    assert not leaked, text
    assert runs == [] and sent == 0
    assert rerun == 0
    assert v.ok, v.explain()


def test_control_crm_error_with_the_password(lab, monkeypatch, capsys):
    def careless(url: sa.URL, exc: BaseException) -> Exception:
        return crm_extract.CrmConnectionError(
            f"cannot connect to the CRM database {url.render_as_string(hide_password=False)}"
        )

    monkeypatch.setattr(crm_extract, "_connection_error", careless)
    _, _, text, _ = crm_unreachable(lab, monkeypatch, capsys)
    leaked = CRM_PASSWORD in text
    control(
        "CRM database unreachable",
        "password hidden in errors",
        "the password in the error" if leaked else "nothing",
        leaked,
    )


# --------------------------------------------------------------------------- state DB down


class StateOutage:
    """A real outage of the state database on PostgreSQL: new connections are refused and the
    open ones killed (``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``), until ``end()``.

    Everything in that database goes down together, the shared rate limiter included, as in
    production. The moments it starts are chosen by wrapping StateStore methods that only watch
    (the k-th ``begin_intent`` / ``record_success``); the failures themselves are the server's.
    """

    def __init__(self, url: str) -> None:
        self.name = sa.make_url(url).database
        assert self.name and self.name.startswith("erzy_test_"), self.name
        self.admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.down = self.was_down = False

    def begin(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS false"))
            others = "datname = :name AND pid <> pg_backend_pid()"
            conn.execute(
                sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}"),
                {"name": self.name},
            )
            # pg_terminate_backend only signals: wait until every session is really gone.
            deadline = time.monotonic() + 10
            count = sa.text(f"SELECT count(*) FROM pg_stat_activity WHERE {others}")
            while conn.execute(count, {"name": self.name}).scalar_one():
                assert time.monotonic() < deadline, "backends of the state DB did not end"
                time.sleep(0.01)
        self.down = self.was_down = True

    def end(self) -> None:
        if self.down:
            with self.admin.connect() as conn:
                conn.execute(sa.text(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS true"))
            self.down = False

    def close(self) -> None:
        self.end()
        self.admin.dispose()


def back_after_the_step(outage: StateOutage, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outage lasts through the sync step and its retries; the database is back when the
    CLI reads its summary (see test_cli_summary_with_the_state_database_still_down)."""
    import dagster as dg

    real_execute = dg.JobDefinition.execute_in_process

    def execute_in_process(*args, **kwargs):
        try:
            return real_execute(*args, **kwargs)
        finally:
            outage.end()

    monkeypatch.setattr(dg.JobDefinition, "execute_in_process", execute_in_process)


@pytest.fixture
def outage(lab: FaultLab, pg_url: str):
    """The lab's state database on PostgreSQL, and the means to take it down for real."""
    lab.use_state_database(pg_url)
    o = StateOutage(pg_url)
    try:
        yield o
    finally:
        o.close()


def state_down(
    lab: FaultLab,
    outage: StateOutage,
    monkeypatch: pytest.MonkeyPatch,
    *,
    when: str,
    send_anyway: bool = False,
    k: int = 8,
) -> dict[str, Any]:
    lab.populate()
    calls = Counter()
    real_begin, real_success = StateStore.begin_intent, StateStore.record_success

    def begin_intent(self, *args, **kwargs):
        calls["begin"] += 1
        if when == "before_send" and calls["begin"] == k + 1:
            outage.begin()
        try:
            return real_begin(self, *args, **kwargs)
        except sa.exc.OperationalError:
            if send_anyway:
                return True
            raise

    def record_success(self, *args, **kwargs):
        calls["success"] += 1
        if when == "after_send" and calls["success"] == k + 1:
            outage.begin()
        return real_success(self, *args, **kwargs)

    monkeypatch.setattr(StateStore, "begin_intent", begin_intent)
    monkeypatch.setattr(StateStore, "record_success", record_success)
    back_after_the_step(outage, monkeypatch)
    code, _ = lab.sync()
    was_down = outage.was_down
    writes_during = lab.stats()["writes"]
    during = lab.check(final=False)
    lab.notes.append("state DB down×1")
    rerun, _ = lab.sync()
    leases = lab.age_leases()
    final_run, _ = lab.sync()
    return {
        "code": code,
        "was_down": was_down,
        "writes_during": writes_during,
        "during": during,
        "rerun": rerun,
        "leases": leases,
        "final_run": final_run,
        "verdict": lab.check(),
    }


def test_state_database_blip_recovered_by_the_step_retry(lab, outage, monkeypatch):
    """Down between a send and its record, back when Dagster retries the step: the same run
    finishes the job (same run id, so its own lease and pending intent are picked up)."""
    k = 8
    lab.populate()
    real_success, real_bind = StateStore.record_success, sync_assets.bind_account
    calls = Counter()

    def record_success(self, *args, **kwargs):
        calls["success"] += 1
        if calls["success"] == k + 1:
            outage.begin()
        return real_success(self, *args, **kwargs)

    def bind_account(*args, **kwargs):  # the step's first state read, once per step attempt
        calls["attempts"] += 1
        outage.end()  # the retried step finds the database back
        return real_bind(*args, **kwargs)

    monkeypatch.setattr(StateStore, "record_success", record_success)
    monkeypatch.setattr(sync_assets, "bind_account", bind_account)
    code, summaries = lab.sync()
    lab.notes.append("state DB blip×1")
    v = lab.check()
    lab.record("state DB blip, step retried", v)
    assert calls["success"] > k and calls["attempts"] == 2 and len(lab.store.runs()) == 1
    assert code == 0
    assert v.ok, v.explain()
    assert summaries[0]["created"] == N, summaries  # counted once each, across both attempts
    assert lab.stats()["writes"] == N and lab.stats()["replays"] == 1


@pytest.mark.parametrize("when", ["before_send", "after_send"])
def test_state_database_unavailable_mid_run(lab, outage, monkeypatch, when):
    k = 8
    r = state_down(lab, outage, monkeypatch, when=when, k=k)
    v: Verdict = r["verdict"]
    lab.record(f"state DB down mid-run ({when.replace('_', ' ')})", v)
    assert r["was_down"] and r["code"] == 1
    # Nothing is sent that the state cannot record: before the send, the k+1-th contact is not
    # sent at all; after it, it is in ErzyCall with its intent (and key) committed.
    assert r["writes_during"] == (k if when == "before_send" else k + 1)
    assert not [p for p in r["during"].problems if "unknown to the state" in p], r["during"]
    assert r["rerun"] == 0 and r["final_run"] == 0
    assert v.ok, v.explain()
    assert lab.stats()["writes"] == N


def test_control_state_down_sending_without_a_committed_intent(lab, outage, monkeypatch):
    # The shared rate limiter lives in the state database and would refuse the send by itself;
    # here it is kept in memory so that only the intent-before-send order is switched off.
    in_memory = lambda url, key_id: InMemoryRateLimitStore()  # noqa: E731
    monkeypatch.setattr(resources, "SqlRateLimitStore", in_memory)
    # The lease is confirmed in the state database before each request too, which would stop
    # the send on its own: switch that off as well, so only the intent's order is tested.
    monkeypatch.setattr(LeaseKeeper, "confirm", lambda self: None)
    r = state_down(lab, outage, monkeypatch, when="before_send", send_anyway=True)
    unknown = [p for p in r["during"].problems if "unknown to the state" in p]
    control(
        "state DB down mid-run (before send)",
        "no send without a committed intent",
        f"{len(unknown)} contact(s) in ErzyCall unknown to the state",
        bool(unknown),
    )


def test_cli_summary_with_the_state_database_still_down(lab, outage, monkeypatch):
    lab.populate()
    real_success = StateStore.record_success
    calls = Counter()

    def record_success(self, *args, **kwargs):
        calls["success"] += 1
        if calls["success"] == 9:
            outage.begin()
        return real_success(self, *args, **kwargs)

    monkeypatch.setattr(StateStore, "record_success", record_success)
    code, summaries = lab.sync()
    assert outage.down and code == 1 and summaries[0]["status"] == "FAILED"


# --------------------------------------------------------------------------- key revoked, scope


def key_revoked_mid_run(lab: FaultLab, monkeypatch: pytest.MonkeyPatch, k: int = 8):
    lab.populate()
    created = Counter()

    def revoke_after_k(req: Any, resp: Any) -> None:
        if req.method == "POST" and resp.status == 201:
            created["n"] += 1
            if created["n"] == k:
                lab.sandbox.revoke_key(DEMO_API_KEY)

    lab.after_request.append(revoke_after_k)
    mark = len(lab.log())
    code, summaries = lab.sync()
    lab.after_request.clear()
    after_401 = requests_after_first(lab, 401, mark)
    during = lab.check(final=False)
    lab.sandbox.add_key(GOOD_KEY)
    monkeypatch.setenv("ERZYCALL_API_KEY", GOOD_KEY)
    rerun, _ = lab.sync()
    return code, summaries, after_401, during, rerun, lab.check()


def test_key_revoked_mid_run(lab, monkeypatch, capsys):
    code, summaries, after_401, during, rerun, v = key_revoked_mid_run(lab, monkeypatch)
    lab.record("key revoked mid-run", v)
    assert code == 1 and summaries[0]["status"] == "FAILED"
    assert "KEY_REVOKED" in capsys.readouterr().err
    assert after_401 == 0, "the run went on after a 401"
    assert during.present == 8 and not during.duplicated and not during.wrong
    assert rerun == 0
    assert v.ok, v.explain()
    assert lab.stats()["writes"] == N


def test_control_key_revoked_without_stopping(lab, monkeypatch):
    auth_errors_not_fatal(monkeypatch)
    _, _, after_401, _, _, v = key_revoked_mid_run(lab, monkeypatch)
    control(
        "key revoked mid-run",
        "stop at the first 401",
        f"{after_401} requests after the 401",
        after_401 > 0,
    )


READ_ONLY_KEY = "ek_test_fault_matrix_read_only_0003"


def scope_missing(lab: FaultLab, monkeypatch: pytest.MonkeyPatch):
    lab.populate()
    lab.sandbox.add_key(READ_ONLY_KEY, scopes=("contacts:read",))
    monkeypatch.setenv("ERZYCALL_API_KEY", READ_ONLY_KEY)
    mark = len(lab.log())
    code, summaries = lab.sync()
    after_403 = requests_after_first(lab, 403, mark)
    during = lab.check(final=False)
    monkeypatch.setenv("ERZYCALL_API_KEY", DEMO_API_KEY)
    rerun, _ = lab.sync()
    return code, summaries, after_403, during, rerun, lab.check()


def test_scope_missing(lab, monkeypatch, capsys):
    code, summaries, after_403, during, rerun, v = scope_missing(lab, monkeypatch)
    lab.record("key without contacts:write", v)
    assert code == 1 and summaries[0]["status"] == "FAILED"
    err = capsys.readouterr().err
    assert "INSUFFICIENT_SCOPE" in err and READ_ONLY_KEY not in err
    assert after_403 == 0
    assert during.present == 0 and not [p for p in during.problems if "unknown" in p]
    assert rerun == 0
    assert v.ok, v.explain()


def test_control_scope_missing_with_deferred_rows_not_audited(lab, monkeypatch):
    real_add = StateStore.add_audit_values
    outcome = AUDIT_FIELDS.index("outcome")

    def add_audit_values(self, rows):
        return real_add(self, [r for r in rows if r[outcome] != "deferred"])

    monkeypatch.setattr(StateStore, "add_audit_values", add_audit_values)
    *_, v = scope_missing(lab, monkeypatch)
    control(
        "key without contacts:write",
        "deferred contacts written to the audit",
        f"{len(v.audit)} audit issue(s)",
        bool(v.audit),
    )


def test_control_scope_missing_without_stopping(lab, monkeypatch):
    auth_errors_not_fatal(monkeypatch)
    _, _, after_403, _, _, v = scope_missing(lab, monkeypatch)
    control(
        "key without contacts:write",
        "stop at the first 403",
        f"{after_403} requests after the 403",
        after_403 > 0,
    )


# --------------------------------------------------------------------------- overlapping syncs

GROUPS = ("vip", "newsletter")
CONCURRENT_LATENCY = 0.03


def overlapping_round(lab: FaultLab, tag: str, env: dict[str, str] | None = None) -> list[int]:
    """Two real CLI processes, ``--groups vip`` and ``--groups newsletter``, planned from the same
    state and released to send at the same instant."""
    barrier = lab.tmp_path / f"barrier_{tag}"
    barrier.mkdir()
    procs = []
    for group in GROUPS:
        child_env = {"ERZY_FAULTS_BARRIER": str(barrier / group), **(env or {})}
        procs.append(
            lab.spawn(
                "sync",
                "--groups",
                group,
                name=f"{tag}_{group}",
                module="erzy_pipelines_tests.faults._child",
                env=child_env,
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all((barrier / f"{g}.ready").exists() for g in GROUPS):
            assert time.monotonic() < deadline, "the runs never got to sending"
            assert all(p.poll() is None for p, _ in procs), [o.read_text() for _, o in procs]
            time.sleep(0.02)
        (barrier / "go").touch()
        codes = [proc.wait(120) for proc, _ in procs]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for code, (_, out) in zip(codes, procs, strict=True):
        assert code in (0, 1), out.read_text()
    return codes


def overlapping_syncs(lab: FaultLab, env: dict[str, str] | None = None, rounds: int = 2):
    lab.populate()
    lab.sandbox.faults.latency, lab.sandbox.faults.latency_rate = CONCURRENT_LATENCY, 1.0
    shared = [i for i in range(1, N + 1) if {"vip", "newsletter"} <= set(_groups(i))]
    per_round = []
    changes = 0
    for n in range(rounds):
        if n:
            for i in [*shared, 3, 4]:
                lab.h.update_person(i, notes=f"round {n}")
            changes = len(shared) + 2
        mark = len(lab.log())
        codes = overlapping_round(lab, f"round{n}", env)
        per_round.append((codes, write_requests_per_phone(lab, mark), changes))
    lab.notes.append(f"2 runs at once×{rounds}, {len(shared)} shared")
    lab.sandbox.faults.latency = 0.0
    lab.settle(CONCURRENT_LATENCY + 0.1)
    return shared, per_round, lab.check(",".join(sorted(GROUPS)))


def _groups(i: int) -> list[str]:
    from erzy_pipelines_tests.faults.lab import memberships_for

    return memberships_for(i)


def test_two_overlapping_group_syncs_at_once(lab):
    shared, per_round, v = overlapping_syncs(lab)
    lab.record("vip + newsletter syncs at once", v)
    assert v.ok, v.explain()
    members = len([i for i in range(1, N + 1) if set(_groups(i)) & set(GROUPS)])
    (codes0, writes0, _), (codes1, writes1, changes1) = per_round
    assert codes0 == [0, 0] and codes1 == [0, 0]
    assert max(writes0.values()) == 1 and len(writes0) == members, writes0
    assert max(writes1.values()) == 1 and sum(writes1.values()) == changes1, writes1
    assert lab.stats()["writes"] == members + changes1
    # Both runs planned every shared contact; each time, the one that came second found it
    # leased by the other or already done under the lease: no request.
    resolved = [
        r
        for r in lab.store.audit_rows()
        if r["error_code"] in ("claimed_by_another_run", "done_by_another_run")
    ]
    assert len(resolved) == 2 * len(shared), resolved


def test_control_overlapping_syncs_without_leases(lab):
    _, per_round, v = overlapping_syncs(lab, env={"ERZY_FAULTS_BREAK": "leases"}, rounds=1)
    ((_, writes, _),) = per_round
    twice = sum(1 for n in writes.values() if n > 1)
    control(
        "vip + newsletter syncs at once",
        "leases + re-check under the lease",
        f"{twice} contacts written twice",
        twice > 0,
    )


# --------------------------------------------------------------------------- leases vs. long waits

LEASE_WAIT_N = 3
LEASE_LIMITS = "2/6"


def leases_under_long_waits(lab: FaultLab, pg_url: str, *, env: dict[str, str] | None = None):
    """Two "hosts" (separate Dagster instances) share one PostgreSQL state database and the key's
    budget, 2 requests per 6 s, spent by another client for the next ~26 s: run A claims its
    first contact and waits for its turn, while a lease lasts 1.5 s. Then every contact changes
    in the CRM and run B starts — after A's lease would have run out unrenewed, and with other
    payloads, so a contact sent by both would be two contacts (the lab's sandbox refuses no
    duplicate). A last sync sends what the two deferred, and ErzyCall is compared with the CRM."""
    from erzy_pipelines.state.rate_budget import SqlRateLimitStore, rate_limit_events

    lab.use_state_database(pg_url)
    lab.populate(LEASE_WAIT_N)
    # The other client's two requests, stamped so that the budget frees ~26 s from now, however
    # long run A takes to start: A's first contact then waits many lease lengths, long enough
    # for run B to start (several seconds on a loaded machine) and reach the same contact.
    budget = SqlRateLimitStore(pg_url, key_id(DEMO_API_KEY))
    spent = {"key_id": budget.key_id, "at": time.time() + 20}
    with budget._engine.begin() as conn:
        conn.execute(rate_limit_events.insert(), [spent, spent])
    budget.close()
    child_env = {
        "ERZYCALL_RATE_LIMITS": LEASE_LIMITS,
        "ERZY_LEASE_SECONDS": "1.5",
        "ERZYCALL_TIMEOUT_SECONDS": "0.5",
        **(env or {}),
    }
    module = "erzy_pipelines_tests.faults._child"
    a, out_a = lab.spawn("sync", name="lease_a", module=module, env=child_env)
    deadline = time.monotonic() + 90
    while not lab.store.lease_holders() and time.monotonic() < deadline:
        time.sleep(0.05)  # A holds its first contact and waits for the budget
    for i in range(1, LEASE_WAIT_N + 1):
        lab.h.update_person(i, full_name=f"Person {i}, renamed while A waits")
    b, out_b = lab.spawn("sync", name="lease_b", module=module, env=child_env)
    codes = [a.wait(180), b.wait(180)]
    lab.notes.append("2 hosts, lease 1.5 s < 6 s wait")
    last, _ = lab.sync()
    return [*codes, last], lab.check(), out_a.read_text() + out_b.read_text()


def test_leases_shorter_than_the_rate_limit_wait_are_renewed(lab, pg_url):
    codes, v, output = leases_under_long_waits(lab, pg_url)
    lab.record("leases shorter than the waits", v)
    assert codes == [0, 0, 0], output[-3000:]
    assert v.ok, v.explain()  # state == ErzyCall field by field, no duplicate, nothing missing
    claimed = [r for r in lab.store.audit_rows() if r["error_code"] == "claimed_by_another_run"]
    assert claimed, "run B never met a lease of run A's: the scenario did not overlap"


def test_control_leases_not_renewed_while_waiting(lab, pg_url):
    _, v, _ = leases_under_long_waits(lab, pg_url, env={"ERZY_FAULTS_BREAK": "renewal"})
    control(
        "leases shorter than the waits",
        "leases renewed and confirmed before each send",
        f"{v.duplicated} duplicate(s), {v.wrong} wrong, {len(v.problems)} problem(s)",
        not v.ok,
    )


def test_the_checker_reads_the_sandbox_field_by_field(lab):
    """Sanity of the oracle: a contact changed behind the sync's back is reported as wrong."""
    lab.populate()
    assert lab.sync()[0] == 0
    assert lab.check().ok
    victim = lab.sandbox.contacts()[0]
    with lab.sandbox.app.store.lock:
        body = dict(victim, groupIds=["grp_trial"])
        lab.sandbox.app.store._db.execute(
            "UPDATE contacts SET body = ? WHERE id = ?", (json.dumps(body), victim["id"])
        )
    v = lab.check()
    control(
        "checker sanity", "a group changed behind the sync's back", f"{v.wrong} wrong", v.wrong == 1
    )
