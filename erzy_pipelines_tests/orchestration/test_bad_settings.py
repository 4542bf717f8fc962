"""A corpus of broken settings through the real CLI (`erzy-pipelines sync --dry-run`): each one
exits 2 before anything runs, with one `error:` line that names the variable as the user wrote
it, no traceback, no secret, nothing launched, nothing written to the state or the CRM."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from erzy_pipelines import cli
from erzy_pipelines_tests.orchestration.conftest import SyncHarness, person

PASSWORD = "s3cr3t-PW"
KEY = "ek_live_corpus_secret_key_0123456789"

#: name -> ({variable: value}, the variable the error must name). "@..." is a SQL file written
#: with that text; "{tmp}" is the test's folder.
CASES: dict[str, tuple[dict[str, str], str]] = {
    "rate limits in words": ({"ERZYCALL_RATE_LIMITS": "sixty per minute"}, "ERZYCALL_RATE_LIMITS"),
    "rate limit of zero": ({"ERZYCALL_RATE_LIMITS": "0/60"}, "ERZYCALL_RATE_LIMITS"),
    "rate limits empty": ({"ERZYCALL_RATE_LIMITS": " , "}, "ERZYCALL_RATE_LIMITS"),
    "rate window of zero seconds": ({"ERZYCALL_RATE_LIMITS": "60/0"}, "ERZYCALL_RATE_LIMITS"),
    "rate limit without window": ({"ERZYCALL_RATE_LIMITS": "60"}, "ERZYCALL_RATE_LIMITS"),
    "timeout not a number": ({"ERZYCALL_TIMEOUT_SECONDS": "abc"}, "ERZYCALL_TIMEOUT_SECONDS"),
    "timeout zero": ({"ERZYCALL_TIMEOUT_SECONDS": "0"}, "ERZYCALL_TIMEOUT_SECONDS"),
    "timeout negative": ({"ERZYCALL_TIMEOUT_SECONDS": "-5"}, "ERZYCALL_TIMEOUT_SECONDS"),
    "base URL over ftp": ({"ERZYCALL_BASE_URL": "ftp://app.erzycall.com/api/v1"},
                          "ERZYCALL_BASE_URL"),
    "base URL plain http remote": ({"ERZYCALL_BASE_URL": "http://example.com/api/v1"},
                                   "ERZYCALL_BASE_URL"),
    "base URL with credentials": (
        {"ERZYCALL_BASE_URL": f"https://me:{PASSWORD}@app.erzycall.com/api/v1"},
        "ERZYCALL_BASE_URL",
    ),
    "base URL not a URL": ({"ERZYCALL_BASE_URL": "not a url"}, "ERZYCALL_BASE_URL"),
    "base URL with a query": ({"ERZYCALL_BASE_URL": "https://app.erzycall.com/api/v1?x=1"},
                              "ERZYCALL_BASE_URL"),
    "key of another service": ({"ERZYCALL_API_KEY": "sk_live_0123456789"}, "ERZYCALL_API_KEY"),
    "key that is a word": ({"ERZYCALL_API_KEY": "changeme"}, "ERZYCALL_API_KEY"),
    "CRM URL not a URL": ({"CRM_DATABASE_URL": "not a url"}, "CRM_DATABASE_URL"),
    "CRM server down": (
        {"CRM_DATABASE_URL": f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:1/crm"},
        "CRM_DATABASE_URL",
    ),
    "CRM MariaDB down": (
        {"CRM_DATABASE_URL": f"mysql+pymysql://root:{PASSWORD}@127.0.0.1:1/crm"},
        "CRM_DATABASE_URL",
    ),
    "CRM driver unknown": ({"CRM_DATABASE_URL": "nosuchdb://host/crm"}, "CRM_DATABASE_URL"),
    "CRM SQLite folder missing": ({"CRM_DATABASE_URL": "sqlite:////no/such/dir/crm.sqlite"},
                                  "CRM_DATABASE_URL"),
    "contacts file missing": ({"CRM_CONTACTS_SQL": "{tmp}/nope/contacts.sql"}, "CRM_CONTACTS_SQL"),
    "contacts path a folder": ({"CRM_CONTACTS_SQL": "{tmp}"}, "CRM_CONTACTS_SQL"),
    "contacts file empty": ({"CRM_CONTACTS_SQL": "@ ;\n"}, "CRM_CONTACTS_SQL"),
    "contacts file not text": ({"CRM_CONTACTS_SQL": "#binary"}, "CRM_CONTACTS_SQL"),
    "contacts without phone": (
        {"CRM_CONTACTS_SQL": "@SELECT id AS crm_id, full_name AS title FROM people"},
        "CRM_CONTACTS_SQL",
    ),
    "contacts typo'd column": (
        {"CRM_CONTACTS_SQL": "@SELECT id AS crm_id, full_name AS title, phone, email AS emial "
         "FROM people"},
        "CRM_CONTACTS_SQL",
    ),
    "contacts unknown table": (
        {"CRM_CONTACTS_SQL": "@SELECT id AS crm_id, full_name AS title, phone FROM persons"},
        "CRM_CONTACTS_SQL",
    ),
    "contacts unknown column": (
        {"CRM_CONTACTS_SQL": "@SELECT id AS crm_id, fullname AS title, phone FROM people"},
        "CRM_CONTACTS_SQL",
    ),
    "contacts two statements": (
        {"CRM_CONTACTS_SQL": "@SELECT id AS crm_id, full_name AS title, phone FROM people; "
         "SELECT 1"},
        "CRM_CONTACTS_SQL",
    ),
    "contacts an UPDATE": (
        {"CRM_CONTACTS_SQL": "@UPDATE people SET full_name = 'x' "
         "RETURNING id AS crm_id, full_name AS title, phone"},
        "CRM_CONTACTS_SQL",
    ),
    "contacts a DELETE": ({"CRM_CONTACTS_SQL": "@DELETE FROM people"}, "CRM_CONTACTS_SQL"),
    "memberships file missing": ({"CRM_MEMBERSHIPS_SQL": "{tmp}/nope/m.sql"},
                                 "CRM_MEMBERSHIPS_SQL"),
    "memberships file empty": ({"CRM_MEMBERSHIPS_SQL": "@\n"}, "CRM_MEMBERSHIPS_SQL"),
    "memberships unknown table": (
        {"CRM_MEMBERSHIPS_SQL": "@SELECT person_id AS crm_id, group_key, erzy_group AS "
         "erzycall_group_id FROM no_such_groups"},
        "CRM_MEMBERSHIPS_SQL",
    ),
    "memberships without group_key": (
        {"CRM_MEMBERSHIPS_SQL": "@SELECT person_id AS crm_id FROM people_groups"},
        "CRM_MEMBERSHIPS_SQL",
    ),
    "region unknown": ({"ERZY_DEFAULT_REGION": "XX"}, "ERZY_DEFAULT_REGION"),
    "region a word": ({"ERZY_DEFAULT_REGION": "usa"}, "ERZY_DEFAULT_REGION"),
    "state folder missing": ({"ERZY_STATE_DATABASE_URL": "sqlite:////no/such/dir/state.sqlite"},
                             "ERZY_STATE_DATABASE_URL"),
    "state server down": (
        {"ERZY_STATE_DATABASE_URL": f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/state"},
        "ERZY_STATE_DATABASE_URL",
    ),
    "state URL garbage": ({"ERZY_STATE_DATABASE_URL": "garbage"}, "ERZY_STATE_DATABASE_URL"),
    "request cap negative": ({"ERZY_MAX_REQUESTS_PER_RUN": "-5"}, "ERZY_MAX_REQUESTS_PER_RUN"),
    "request cap in words": ({"ERZY_MAX_REQUESTS_PER_RUN": "many"}, "ERZY_MAX_REQUESTS_PER_RUN"),
    "run time negative": ({"ERZY_MAX_RUN_SECONDS": "-1"}, "ERZY_MAX_RUN_SECONDS"),
    "reject share above 1": ({"ERZY_REJECT_RATE_WARN": "7"}, "ERZY_REJECT_RATE_WARN"),
    "reject share negative": ({"ERZY_REJECT_RATE_WARN": "-0.1"}, "ERZY_REJECT_RATE_WARN"),
    "ownership unknown": ({"ERZY_OWNERSHIP": "mine"}, "ERZY_OWNERSHIP"),
    "lease shorter than two timeouts": ({"ERZY_LEASE_SECONDS": "10"}, "ERZY_LEASE_SECONDS"),
    "lease zero": ({"ERZY_LEASE_SECONDS": "0"}, "ERZY_LEASE_SECONDS"),
    "schedule in words": ({"ERZY_SCHEDULE_CRON": "every day"}, "ERZY_SCHEDULE_CRON"),
    "reconcile cron of three fields": ({"ERZY_RECONCILE_CRON": "* * *"}, "ERZY_RECONCILE_CRON"),
    "deleted-in-ErzyCall unknown": ({"ERZY_DELETED_IN_ERZYCALL": "forget"},
                                    "ERZY_DELETED_IN_ERZYCALL"),
    "deletion cap negative": ({"ERZY_MAX_DELETIONS_PER_RUN": "-1"}, "ERZY_MAX_DELETIONS_PER_RUN"),
    "deletion share 3": ({"ERZY_MAX_DELETION_SHARE": "3"}, "ERZY_MAX_DELETION_SHARE"),
    "deletion share 150%": ({"ERZY_MAX_DELETION_SHARE": "1.5"}, "ERZY_MAX_DELETION_SHARE"),
}


def _value(harness: SyncHarness, name: str, value: str) -> str:
    if value.startswith("@"):
        path = harness.tmp_path / f"{name.lower()}.sql"
        path.write_text(value[1:])
        return str(path)
    if value == "#binary":
        path = harness.tmp_path / "binary.sql"
        path.write_bytes(b"\xff\xfe\x00SELECT\x80\x81")
        return str(path)
    return value.format(tmp=harness.tmp_path)


def test_the_corpus_has_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_setting_is_one_clear_error_before_anything_runs(
    harness: SyncHarness, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture, case: str
) -> None:
    harness.add_people(person(i) for i in range(1, 4))
    monkeypatch.setenv("ERZYCALL_API_KEY", KEY)  # a secret that must never be shown
    monkeypatch.setenv("DAGSTER_HOME", str(harness.tmp_path / "dagster_home"))
    settings, named = CASES[case]
    for name, value in settings.items():
        monkeypatch.setenv(name, _value(harness, name, value))
    crm_before = _people(harness)
    state_file = Path(harness.state_url.removeprefix("sqlite:///"))
    existed = state_file.exists()

    code = cli.main(["sync", "--dry-run"])
    out, err = capfd.readouterr()

    said = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, f"exit {code}\n{out}\n{err[-2000:]}"
    assert len(said) == 1 and named in said[0], said
    assert "Traceback" not in err and "Traceback" not in out
    assert PASSWORD not in out + err and KEY not in out + err
    assert "scope" not in out and "The plan needs" not in out  # no summary, no plan
    assert harness.requests_since_sync() == []  # nothing reached the API
    assert _people(harness) == crm_before
    assert state_file.exists() == existed  # the state database was not even created
    assert _launched(harness.tmp_path / "dagster_home") == 0


def _launched(home: Path) -> int:
    """Runs in the instance's run storage (SQLite, the package's dagster.yaml)."""
    runs = home / "history" / "runs.db"
    if not runs.exists():
        return 0
    engine = sa.create_engine(f"sqlite:///{runs}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT COUNT(*) FROM runs")).scalar_one()
    finally:
        engine.dispose()


def _people(harness: SyncHarness) -> list[tuple]:
    with harness.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM people ORDER BY id"))]
