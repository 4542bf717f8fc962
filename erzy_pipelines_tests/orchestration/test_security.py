"""Security of the whole sync: the key stays secret, TLS stays on, personal data stays out of logs.

Every test runs the real thing — Dagster assets through ``cli.run_sync``, the sandbox over HTTP,
a SQLite CRM — and then searches *everything* the run left behind for the secret: captured log
records, the process's stdout/stderr (Dagster's console logger), every event of the run
serialized, the run record and its snapshots, every row of every ``erzy_`` table and every file
written under the test's folder.
"""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import sqlalchemy as sa
from dagster._core.remote_representation.external_data import (
    RepositorySnap,
    ResourceConfigEnvVarSnap,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import erzy_pipelines.orchestration.resources as resources_module
from erzy_pipelines import cli
from erzy_pipelines.erzycall import ErzyCallClient, errors
from erzy_pipelines.erzycall.logutil import mask_phone_text, mask_pii, mask_text
from erzy_pipelines.erzycall.retry import RetryPolicy
from erzy_pipelines.orchestration.definitions import build_definitions, build_resources
from erzy_pipelines.orchestration.resources import CrmDatabaseResource, ErzyCallResource
from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxConfig, SandboxServer
from erzy_pipelines.settings import SETTINGS_NAMES
from erzy_pipelines_tests.conftest import IN_CI
from erzy_pipelines_tests.orchestration.conftest import SyncHarness, person

SECRET = "ek_live_9f2cQmZx7LtW4nRb8VhY1pKdA6"
SECRET_BODY = SECRET.removeprefix("ek_live_")  # a printed key minus its public prefix is a leak too
CRM_PASSWORD = "hunter2-Pw-77"
FAST_RETRY = RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0, max_total_wait=1.0)


# --- collecting everything a run leaves behind ----------------------------------------------------


def _state_rows(url: str) -> list[str]:
    """Every row of every erzy_ table, as text."""
    engine = sa.create_engine(url)
    try:
        out = []
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                if table.startswith("erzy_"):
                    rows = conn.execute(sa.text(f'SELECT * FROM "{table}"')).all()
                    out += [f"{table}: {tuple(row)!r}" for row in rows]
        return out
    finally:
        engine.dispose()


def _dagster_records(instance: dg.DagsterInstance) -> list[str]:
    """Every run's events, record, config, tags, job and plan snapshots, serialized."""
    out = []
    for run in instance.get_runs():
        out += [repr(run), dg.serialize_value(run), repr(run.run_config), repr(run.tags)]
        for entry in instance.all_logs(run.run_id):
            out += [repr(entry), dg.serialize_value(entry)]
            if entry.dagster_event is not None and entry.dagster_event.is_step_failure:
                out.append(entry.dagster_event.step_failure_data.error.to_string())
        if run.job_snapshot_id:
            out.append(dg.serialize_value(instance.get_job_snapshot(run.job_snapshot_id)))
        if run.execution_plan_snapshot_id:
            plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            out.append(dg.serialize_value(plan))
    return out


def _files(root: Path) -> list[str]:
    """The bytes of every file under ``root`` (state DB, asset pickles, CRM, ...), decoded."""
    return [
        p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file()
    ]


def everything(
    h: SyncHarness, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> dict[str, list[str]]:
    out, err = capfd.readouterr()
    messages = [r.getMessage() for r in caplog.records]
    messages += [str(r.exc_text or "") for r in caplog.records]
    return {
        "log records": [*messages, caplog.text],
        "stdout/stderr": [out, err],
        "dagster event log and run records": _dagster_records(h.instance),
        "state tables": _state_rows(h.state_url),
        "files": _files(h.tmp_path),
    }


def assert_absent(needles: Iterable[str], haystacks: dict[str, list[str]]) -> None:
    for needle in needles:
        for where, texts in haystacks.items():
            hits = [t for t in texts if needle in t]
            assert not hits, f"{needle!r} found in {where}: {hits[0][:300]!r}"


@pytest.fixture
def secret_harness(harness, monkeypatch, caplog) -> SyncHarness:
    """The harness with a real-looking secret key the sandbox accepts, and every log captured."""
    harness.sandbox.add_key(SECRET)
    monkeypatch.setenv("ERZYCALL_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)  # every logger: httpx, httpcore, dagster, ours
    return harness


def _client_factory(handler) -> Any:
    """Build the resource's client on an httpx.MockTransport (for servers that misbehave)."""

    def factory(**kwargs: Any) -> ErzyCallClient:
        return ErzyCallClient(
            **kwargs, retry=FAST_RETRY, http_transport=httpx.MockTransport(handler)
        )

    return factory


def _echo_key(request: httpx.Request) -> httpx.Response:
    """A server that quotes the key back in every error (message and details)."""
    key = request.headers["X-API-Key"]
    body = {
        "error": {
            "code": "UNAUTHORIZED",
            "message": f"Invalid API key {key}",
            "details": [{"field": "X-API-Key", "message": f"{key} is unknown"}],
        }
    }
    return httpx.Response(401, json=body)


def _drop_with_key(request: httpx.Request) -> httpx.Response:
    key = request.headers["X-API-Key"]
    raise httpx.ReadError(f"connection reset while sending X-API-Key: {key}")


# --- the key --------------------------------------------------------------------------------------


def test_key_never_appears_anywhere_after_a_sync(secret_harness, caplog, capfd):
    h = secret_harness
    h.add_people(person(i) for i in range(1, 9))
    h.add_people([person(9, phone="not a phone"), person(10, phone="(415) 555-1001")])
    h.add_memberships([(1, "vip"), (2, "trial")])
    code, summaries = h.sync(log_level="DEBUG")
    assert code == 0, summaries
    h.update_person(3, notes="changed")
    assert h.sync(groups=["vip"], log_level="DEBUG")[0] == 0  # a partition run too
    assert h.sync(dry_run=True, log_level="DEBUG")[0] == 0
    assert len(h.sandbox.contacts()) == 8  # 9 is rejected, 10 merged into 1
    assert_absent([SECRET, SECRET_BODY], everything(h, caplog, capfd))


def test_key_never_appears_when_the_api_refuses_it(secret_harness, caplog, capfd):
    h = secret_harness
    h.add_people(person(i) for i in range(1, 5))
    assert h.sync()[0] == 0
    h.sandbox.revoke_key(SECRET)
    h.update_person(1, notes="changed")
    code, summaries = h.sync(log_level="DEBUG")
    assert code == 1 and summaries[0]["status"] == "FAILED"
    texts = everything(h, caplog, capfd)
    assert any("KEY_REVOKED" in t for t in texts["stdout/stderr"])
    assert_absent([SECRET, SECRET_BODY], texts)


@pytest.mark.parametrize("server", [_echo_key, _drop_with_key], ids=["401-echoes-key", "transport"])
def test_key_never_appears_when_the_server_echoes_it(secret_harness, monkeypatch, caplog, capfd,
                                                     server):
    """A (misbehaving) server that quotes the key in errors, and a transport error that does."""
    h = secret_harness
    h.add_people(person(i) for i in range(1, 4))
    monkeypatch.setattr(resources_module, "ErzyCallClient", _client_factory(server))
    code, _ = h.sync(log_level="DEBUG")
    assert code == 1
    texts = everything(h, caplog, capfd)
    assert any("(redacted)" in t for t in texts["state tables"] + texts["stdout/stderr"])
    assert_absent([SECRET, SECRET_BODY], texts)


def test_key_never_appears_when_the_api_is_unreachable(secret_harness, monkeypatch, caplog, capfd):
    h = secret_harness
    h.add_people(person(i) for i in range(1, 4))
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ERZYCALL_BASE_URL", f"http://127.0.0.1:{port}/api/v1")
    monkeypatch.setattr("erzy_pipelines.erzycall.client.RetryPolicy", lambda: FAST_RETRY)
    code, summaries = h.sync(log_level="DEBUG")
    assert code == 1 and summaries[0]["failed"] == 3
    texts = everything(h, caplog, capfd)
    assert any("ConnectError" in t for t in texts["state tables"])
    assert_absent([SECRET, SECRET_BODY], texts)


def test_resource_and_client_reprs_hide_the_key():
    resource = ErzyCallResource(api_key=SECRET, base_url="https://app.erzycall.com/api/v1")
    client = resource.make_client(None)
    try:
        shown = [repr(resource), str(resource), f"{resource}", f"{resource!r}", repr([resource]),
                 repr(client), str(client)]
    finally:
        client.close()
    assert all("redacted" in s for s in shown[:2])
    assert_absent([SECRET, SECRET_BODY], {"reprs": shown})


def test_ui_config_view_shows_variable_names_not_values(monkeypatch):
    for name in SETTINGS_NAMES:  # build_definitions fills defaults; give them back afterwards
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ERZYCALL_API_KEY", SECRET)
    monkeypatch.setenv("CRM_DATABASE_URL", f"sqlite:///{CRM_PASSWORD}.sqlite")
    monkeypatch.setenv("ERZY_STATE_DATABASE_URL", f"postgresql://u:{CRM_PASSWORD}@db/state")
    snap = RepositorySnap.from_def(build_definitions().get_repository_def())
    by_name = {r.name: r for r in snap.resources}
    assert by_name["erzycall"].configured_values["api_key"] == ResourceConfigEnvVarSnap(
        name="ERZYCALL_API_KEY"
    )
    assert by_name["crm"].configured_values["url"] == ResourceConfigEnvVarSnap(
        name="CRM_DATABASE_URL"
    )
    assert by_name["state"].configured_values["url"] == ResourceConfigEnvVarSnap(
        name="ERZY_STATE_DATABASE_URL"
    )
    assert "ERZYCALL_API_KEY" in snap.utilized_env_vars
    assert_absent([SECRET, SECRET_BODY, CRM_PASSWORD], {"repository snapshot": [
        dg.serialize_value(snap), repr(build_resources())
    ]})


def test_run_config_recorded_by_dagster_has_no_resource_values(secret_harness):
    h = secret_harness
    h.add_people([person(1)])
    assert h.sync()[0] == 0
    (run,) = h.instance.get_runs()
    assert set(run.run_config) <= {"loggers", "ops"}  # resources come from EnvVar, not config
    assert "sync_contacts" in run.run_config["ops"]


# --- TLS and plain http ---------------------------------------------------------------------------


def test_client_built_by_the_resource_verifies_tls():
    resource = ErzyCallResource(api_key=SECRET, base_url="https://app.erzycall.com/api/v1")
    with resource.make_client(None) as client:
        context = client._transport._http._transport._pool._ssl_context  # noqa: SLF001
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.fixture
def self_signed_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate; records what reaches it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True, timeout=60,
        )
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        message = f"openssl cannot make a test certificate: {exc}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the TLS test must run)")
        pytest.skip(message)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.handle_error = lambda *a: None  # the failed handshakes are the point
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/api/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def test_untrusted_certificate_is_refused_before_the_key_is_sent(self_signed_server, monkeypatch):
    base_url, seen = self_signed_server
    monkeypatch.setattr("erzy_pipelines.erzycall.client.RetryPolicy", lambda: FAST_RETRY)
    resource = ErzyCallResource(api_key=SECRET, base_url=base_url)
    with resource.make_client(None) as client, pytest.raises(errors.TransportError) as info:
        client.get_contact("contact_1")
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "certificate" in str(info.value)
    assert SECRET not in str(info.value)
    assert seen == [], "a request got through an unverified TLS connection"


def _failure_text(
    h: SyncHarness, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> str:
    """What a user sees when `erzy-pipelines sync` refuses to run: its `error:` lines.

    The real CLI entry point, nothing caught here: a setting refused before anything starts is
    exit 2 with no summary table; a run that starts and fails is exit 1 with a FAILED row.
    """
    monkeypatch.setenv("DAGSTER_HOME", str(h.tmp_path / "dagster_home"))
    code = cli.main(["sync"])
    out, err = capfd.readouterr()
    errors_shown = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors_shown, f"exit {code} without an error line:\n{err[-3000:]}"
    if code == 2:
        assert "scope" not in out, "refused at exit 2, yet a run's summary was printed"
    else:
        assert code == 1, f"exit {code}:\n{out}\n{err[-3000:]}"
        rows = [line.split() for line in out.splitlines() if line.strip().startswith("all")]
        assert len(rows) == 1 and rows[0][1] == "FAILED", out
    return "\n".join(errors_shown)


@pytest.mark.parametrize(
    "base_url", ["http://app.erzycall.com/api/v1", "http://10.1.2.3:8080/api/v1"]
)
def test_plain_http_to_another_host_fails_the_sync_at_once(harness, monkeypatch, capfd, base_url):
    harness.add_people(person(i) for i in range(1, 4))
    monkeypatch.setenv("ERZYCALL_BASE_URL", base_url)
    text = _failure_text(harness, monkeypatch, capfd)
    assert "ERZYCALL_BASE_URL" in text and "ERZYCALL_ALLOW_INSECURE_HTTP=true" in text
    assert "https://" in text
    assert harness.state().runs() == [], "the run was recorded before the setting was checked"
    assert harness.requests_since_sync() == []


def test_plain_http_is_allowed_only_when_asked(monkeypatch):
    url = "http://erzycall-proxy.internal/api/v1"
    with pytest.raises(dg.Failure, match="ERZYCALL_ALLOW_INSECURE_HTTP"):
        ErzyCallResource(api_key=SECRET, base_url=url).make_client(None)
    for name in SETTINGS_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ERZYCALL_ALLOW_INSECURE_HTTP", "true")
    built = build_resources()["erzycall"]
    assert built.allow_insecure_http is True
    with ErzyCallResource(
        api_key=SECRET, base_url=url, allow_insecure_http=True
    ).make_client(None) as client:
        assert client.base_url == url


def _non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None if it has none.

    A UDP socket "connected" to TEST-NET-1 (192.0.2.1) sends nothing; the kernel just picks the
    local address it would route from. Without a route there, ``ip -4 addr`` is asked instead.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            address = None
    if address and not address.startswith("127.") and address != "0.0.0.0":
        return address
    try:
        listing = subprocess.run(
            ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=10
        ).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired):
        listing = ""
    for line in listing.splitlines():
        fields = line.split()
        if "inet" in fields:
            candidate = fields[fields.index("inet") + 1].split("/")[0]
            if not candidate.startswith("127."):
                return candidate
    return None


def test_sandbox_binds_loopback_by_default():
    assert SandboxConfig().host == "127.0.0.1"
    assert cli.build_parser().parse_args(["sandbox"]).host == "127.0.0.1"
    with SandboxServer(SandboxConfig()) as server:
        assert server._httpd.server_address[0] == "127.0.0.1"  # noqa: SLF001
        with socket.create_connection(("127.0.0.1", server.port), 2):
            pass  # reachable on loopback
        outside = _non_loopback_address()
        if outside is None:
            # A machine with loopback only: nothing outside could reach it; the bound address
            # asserted above is the whole proof.
            return
        # Control: a listener on all interfaces *is* reachable at that address, so the refusal
        # below is the sandbox's loopback binding and not an unreachable address.
        with (
            socket.create_server(("0.0.0.0", 0)) as everywhere,
            socket.create_connection((outside, everywhere.getsockname()[1]), 2),
        ):
            pass
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection((outside, server.port), 2),
        ):
            pass


# --- personal data in logs ------------------------------------------------------------------------

PEOPLE = [
    person(1, full_name="Call me at +1 415 555 2001", email="alice.private@example.org"),
    person(2, email="Bob.Secret@Example.COM", notes="backup: carol.backup@example.net, 4155552002"),
    person(3, phone="+1 (415) 555-1003", full_name=None),  # title falls back to the phone
    person(4, phone="415-555-CALL"),  # rejected: letters
    person(5, phone="(415) 555-1001", email="dupe.person@example.com"),  # merged with person 1
    person(6, phone="+1 415 555 1006 ext. 77"),  # extension
    person(7),  # adopted: exists in ErzyCall already -> 409, lookup by phone (phone in the URL)
]
FULL_PHONES = ["+14155551001", "+14155551003", "+14155551006", "+14155551007", "+14155552001"]
RAW_PHONES = ["4155551001", "4155551003", "4155551006", "4155551007", "4155552001", "4155552002",
              "415 555 2001", "555-1001", "555-1003", "555-CALL"]
EMAILS = ["alice.private@example.org", "bob.secret@example.com", "Bob.Secret@Example.COM",
          "carol.backup@example.net", "dupe.person@example.com", "person7@example.com",
          "person3@example.com", "person6@example.com"]


def test_phones_and_emails_are_masked_in_logs_and_ui_previews(harness, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    harness.add_people(PEOPLE)
    harness.add_memberships([(1, "vip"), (5, "trial")])
    harness.sandbox.add_contact_direct({"title": "by hand", "phone": "+14155551007"})
    code, summaries = harness.sync(log_level="DEBUG")
    assert code == 0, summaries
    harness.update_person(2, notes="now with jane.doe@example.com")
    assert harness.sync(log_level="DEBUG")[0] == 0
    texts = everything(harness, caplog, capfd)
    audit = {r["phone"] for r in harness.state().audit_rows()}
    assert {"+14155551001", "+14155551007"} <= audit  # full values stay in the audit table
    assert any("*" in t for t in texts["log records"])  # masked, not just absent
    shown = {k: texts[k] for k in ("log records", "stdout/stderr")}
    shown["dagster event log"] = texts["dagster event log and run records"]
    assert_absent([*FULL_PHONES, *RAW_PHONES, *EMAILS, "jane.doe@example.com"], shown)


def test_custom_columns_are_masked_in_previews(harness, monkeypatch, caplog, capfd, tmp_path):
    """A ``custom_*`` column is whatever the user's SQL adds: a second phone, an email. The
    crm_contacts preview masks it like notes."""
    sql = tmp_path / "contacts_custom.sql"
    sql.write_text("SELECT id AS crm_id, full_name AS title, phone, company AS custom_company, "
                   "notes AS custom_backup FROM people")
    monkeypatch.setenv("CRM_CONTACTS_SQL", str(sql))
    harness.add_people([
        person(1, company="mobile +1 (415) 555-3008", notes="grace.custom@example.org"),
    ])
    assert harness.sync()[0] == 0
    texts = everything(harness, caplog, capfd)
    events = texts["dagster event log and run records"]
    assert any("custom_company" in t for t in events)  # the column is in the preview...
    assert_absent(  # ...its values are not
        ["555-3008", "4155553008", "grace.custom@example.org"], {"dagster event log": events}
    )


def test_api_errors_quoting_phones_and_emails_are_masked_in_log_lines(caplog):
    caplog.set_level(logging.DEBUG)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(503, json={"error": {"code": "UNAVAILABLE", "message": "busy"}})
        message = "contact +14155559876 (jane.doe@example.com) is invalid"
        details = [{"field": "email", "message": "jane.doe@example.com"}]
        return httpx.Response(
            422, json={"error": {"code": "UNPROCESSABLE", "message": message, "details": details}}
        )

    with _client_factory(handler)(api_key=SECRET, base_url="https://app.erzycall.com/api/v1") as c:
        with pytest.raises(errors.UnprocessableError):
            c.create_contact({"title": "x", "phone": "+14155559876"}, "k-1")
        with pytest.raises(errors.ServerError):
            c.find_contact_by_phone("+14155559876")
    lines = [r.getMessage() for r in caplog.records]
    assert lines
    assert_absent(["+14155559876", "4155559876", "jane.doe@example.com"], {"log lines": lines})
    assert any("j***@example.com" in line for line in lines)


# --- misconfiguration fails fast and says what to fix ---------------------------------------------


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


MISCONFIG = {
    "rate limits not a number": (
        {"ERZYCALL_RATE_LIMITS": "sixty per minute"}, ["ERZYCALL_RATE_LIMITS", "60/60"]
    ),
    "rate limit zero": ({"ERZYCALL_RATE_LIMITS": "0/60"}, ["ERZYCALL_RATE_LIMITS", ">= 1"]),
    "rate limits empty": ({"ERZYCALL_RATE_LIMITS": " , "}, ["ERZYCALL_RATE_LIMITS"]),
    "contacts SQL file missing": (
        {"CRM_CONTACTS_SQL": "{tmp}/nope/contacts.sql"},
        ["CRM_CONTACTS_SQL", "not found", "nope/contacts.sql"],
    ),
    "memberships SQL file missing": (
        {"CRM_MEMBERSHIPS_SQL": "{tmp}/nope/memberships.sql"},
        ["not found", "nope/memberships.sql"],
    ),
    "contacts query without phone": (
        {"CRM_CONTACTS_SQL": "@SELECT id AS crm_id, full_name AS title FROM people"},
        ["missing required column", "phone", "CRM_CONTACTS_SQL"],
    ),
    "contacts query the database refuses": (
        {"CRM_CONTACTS_SQL": "@SELECT id AS crm_id, full_name AS title, mobile AS phone FROM t"},
        ["CRM_CONTACTS_SQL", "no such table: t"],
    ),
    "CRM unreachable": (
        {"CRM_DATABASE_URL": f"postgresql+psycopg://bob:{CRM_PASSWORD}@127.0.0.1:1/crm"},
        ["cannot connect", "bob:***@127.0.0.1:1/crm"],
    ),
    "demo key with the real API": (
        {"ERZYCALL_API_KEY": None, "ERZYCALL_BASE_URL": None},
        ["ERZYCALL_API_KEY", "sandbox"],
    ),
    "base URL with credentials": (
        {"ERZYCALL_BASE_URL": f"https://me:{CRM_PASSWORD}@app.erzycall.com/api/v1"},
        ["ERZYCALL_BASE_URL", "credentials"],
    ),
}


def test_a_contacts_query_that_writes_is_refused_and_the_crm_is_unchanged(
    harness, monkeypatch, capfd
):
    """Before launching, the CLI asks the CRM for the query's columns (no row fetched, in a
    read-only session): a query that would write is refused, naming the setting with the
    database's own words; nothing runs and the CRM is unchanged."""
    harness.add_people(person(i) for i in range(1, 4))
    sql = "UPDATE people SET full_name = 'overwritten' RETURNING id AS crm_id, full_name AS title"
    monkeypatch.setenv("CRM_CONTACTS_SQL", _write(harness.tmp_path / "writes.sql", sql))
    monkeypatch.setenv("DAGSTER_HOME", str(harness.tmp_path / "dagster_home"))
    assert cli.main(["sync", "--dry-run"]) == 2
    out, err = capfd.readouterr()
    (said,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert said.startswith("error: CRM_CONTACTS_SQL: the CRM database refused the query in ")
    assert "writes.sql" in said and "Traceback" not in err and "The plan needs" not in out
    with harness.engine.connect() as conn:
        names = conn.exec_driver_sql("SELECT full_name FROM people").scalars().all()
    assert names and "overwritten" not in names
    assert harness.state().runs() == []


@pytest.mark.parametrize("case", list(MISCONFIG))
def test_misconfiguration_fails_fast_with_what_to_fix(harness, monkeypatch, capfd, case):
    env, expected = MISCONFIG[case]
    harness.add_people(person(i) for i in range(1, 4))
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name)
        elif value.startswith("@"):
            monkeypatch.setenv(name, _write(harness.tmp_path / f"{name}.sql", value[1:]))
        else:
            monkeypatch.setenv(name, value.format(tmp=harness.tmp_path))
    text = _failure_text(harness, monkeypatch, capfd)
    for phrase in expected:
        assert phrase in text, f"{phrase!r} not in {text!r}"
    assert CRM_PASSWORD not in text and DEMO_API_KEY not in text
    assert "Error occurred while executing" not in text.splitlines()[0]  # the cause, not a wrapper
    assert harness.requests_since_sync() == [], "a misconfigured sync sent requests"
    assert [r for r in harness.state().runs() if r.get("requests")] == []


def test_state_tables_hold_key_ids_never_keys(secret_harness):
    h = secret_harness
    h.add_people(person(i) for i in range(1, 4))
    assert h.sync()[0] == 0
    rows = _state_rows(h.state_url)
    assert any(r.startswith("erzy_rate_limit_events") for r in rows)
    assert_absent([SECRET, SECRET_BODY], {"state tables": rows})


@settings(max_examples=200, deadline=None)
@given(
    local=st.from_regex(r"[A-Za-z0-9._%+-]{2,24}", fullmatch=True),
    domain=st.from_regex(r"[a-z0-9-]{1,12}\.(com|org|co\.uk|de)", fullmatch=True),
    national=st.from_regex(r"[2-9]\d{2}[2-9]\d{6}", fullmatch=True),
    style=st.sampled_from(["+1{n}", "+1 {a} {b} {c}", "({a}) {b}-{c}", "1-{a}-{b}-{c}",
                           "{a}.{b}.{c}", "%2B1{n}"]),
)
def test_masks_leave_no_whole_phone_or_email(local, domain, national, style):
    a, b, c = national[:3], national[3:6], national[6:]
    phone = style.format(n=national, a=a, b=b, c=c)
    email = f"{local}@{domain}"
    text = f"call {phone} or write to {email}; thanks"
    for masked in (mask_text(text), mask_pii(f"call +1{national}, {email}")):
        assert email not in masked and national not in "".join(filter(str.isdigit, masked))
    # E.164 keeps country + area code + last two (as in log lines); other forms the last two.
    assert sum(ch.isdigit() for ch in mask_phone_text(phone).replace("%2B", "+")) <= 6


def test_unreachable_crm_failure_in_a_run_hides_the_password(tmp_path):
    """What the UI shows when a scheduled run cannot reach the CRM (the error and its chain)."""
    from dagster._utils.error import serializable_error_info_from_exc_info

    crm = CrmDatabaseResource(
        url=f"postgresql+psycopg://bob:{CRM_PASSWORD}@127.0.0.1:1/crm",
        contacts_sql_path=str(tmp_path / "c.sql"),
        memberships_sql_path=str(tmp_path / "m.sql"),
    )
    with pytest.raises(dg.Failure) as info:
        crm.engine()
    shown = serializable_error_info_from_exc_info((info.type, info.value, info.tb)).to_string()
    assert "CRM_DATABASE_URL" in shown and "bob:***@127.0.0.1:1/crm" in shown
    assert CRM_PASSWORD not in shown
