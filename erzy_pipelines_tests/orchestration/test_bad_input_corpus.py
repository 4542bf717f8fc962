"""A corpus of nasty CRM rows through the whole sync: SQLite CRM -> Dagster assets -> sandbox.

NULLs everywhere, empty strings, emoji, right-to-left text, combining marks, zero-width and
control characters, 10 MB notes, 500 tags, numbers with letters and extensions, duplicate
crm_ids, dates in the future, and group keys full of SQL meta-characters and quotes that become
Dagster partitions. For every row the test says what must become of it; then it checks that

- no run crashes and the sandbox rejected nothing (no 4xx/5xx, 0 failed);
- every row ends in exactly one outcome in the audit (created / merged / rejected with its
  reason), and every contact ErzyCall holds is API-valid and is one the CRM says should exist;
- a partition run of a weird group key sends exactly that group's contacts, with all their
  groups, and no group key ever appears in SQL text sent to the CRM;
- a rerun sends 0 writes.

The CRM here is a schema of its own (untyped columns, no primary key, so duplicate ids and
text in date columns are possible), described by SQL files exactly as a user would.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from erzy_pipelines.core.text import clean_line, utf16_len
from erzy_pipelines.crm.extract import columns_probe_sql, distinct_group_keys_sql
from erzy_pipelines.orchestration.partitions import UNGROUPED_KEY, usable_partition_key
from erzy_pipelines.sandbox import DEMO_GROUPS
from erzy_pipelines.sandbox.validation import FIELDS, validate_contact
from erzy_pipelines_tests.orchestration.conftest import SyncHarness, person

CONTACTS_SQL = """
SELECT id AS crm_id, name AS title, phone, email, notes, tags, country, updated_at,
       company AS custom_company, mood AS custom_mood
FROM corpus_people
"""
MEMBERSHIPS_SQL = (
    "SELECT person AS crm_id, grp AS group_key, erzy AS erzycall_group_id FROM corpus_groups"
)

REAL_GROUPS = {gid for gid, _ in DEMO_GROUPS}
E164_FIELDS = ("title", "phone", "email", "notes", "tags", "groupIds", "customFields")

#: CRM group key -> ErzyCall group id (None: a CRM group that is not sent).
GROUPS: dict[str, str | None] = {
    "vip": "grp_vip",
    "'; DROP TABLE corpus_people; --": "grp_trial",
    'he said "hi" \'twice\'': "grp_newsletter",
    "100%_off\\ LIKE '%'": "grp_events",
    "🎉 party 🎉": "grp_partners",
    "קבוצה עברית": "grp_enterprise",
    "a,b": "grp_churn_risk",
    "x...y": "grp_vip",  # Dagster refuses "..." in a partition key: synced by full runs only
    "café": "grp_events",  # NFC
    "cafe\u0301": "grp_partners",  # the same word in NFD: a different key
    "$1; SELECT * FROM corpus_people WHERE ''=''": "grp_newsletter",
    "\u200bzero-width": "grp_trial",
    "g" * 250: "grp_partners",
    "no-erzycall-group": None,
    UNGROUPED_KEY: "grp_trial",  # a CRM group literally named like the no-group partition
    **{f"many-{i:02}": f"grp_fake_{i:02}" for i in range(1, 22)},  # 21 groups: too many
}
WEIRD_KEYS = [k for k in GROUPS if not k.startswith("many-")]


@dataclass
class Row:
    """One CRM row and what must become of it: ``outcome`` is sent / merged / collapsed
    (an exact duplicate row of the same crm_id) / rejected, ``target`` the E.164 phone or the
    reject reason."""

    crm_id: Any
    phone: Any
    outcome: str
    target: str
    groups: tuple[str, ...] = ()
    fields: dict[str, Any] = field(default_factory=dict)


def sent(crm_id: Any, phone: Any, e164: str, *groups: str, **fields: Any) -> Row:
    return Row(crm_id, phone, "sent", e164, groups, fields)


def merged(crm_id: Any, phone: Any, e164: str, *groups: str, **fields: Any) -> Row:
    return Row(crm_id, phone, "merged", e164, groups, fields)


def rejected(crm_id: Any, phone: Any, reason: str, *groups: str, **fields: Any) -> Row:
    return Row(crm_id, phone, "rejected", reason, groups, fields)


TEN_MB_NOTES = ("Notes 📝 with emoji, עברית and e\u0301 " * 300_000)[: 10 * 1024 * 1024]
ZALGO = "Z" + "\u0336\u0337\u0338\u0301\u0302" * 120 + "algo"
NULLS = dict.fromkeys(("name", "email", "notes", "tags", "country", "updated_at", "company"))
EMPTY = dict.fromkeys(("name", "email", "notes", "tags", "country", "updated_at", "company"), "")

CORPUS: list[Row] = [
    # --- NULLs and empty strings
    sent("null-1", "+14155553001", "+14155553001", **NULLS),
    sent("empty-1", "+14155553002", "+14155553002", **EMPTY),
    sent("blank-1", "+14155553003", "+14155553003", name="   ", tags=" , ,, ", email="  "),
    # --- scripts, emoji, marks, invisible characters
    sent("emoji-1", "+1 415 555 3004", "+14155553004", "🎉 party 🎉", "vip",
         name="👩‍👩‍👧‍👦 Famille Dupont 🇫🇷", notes="🎉" * 100, tags="🔥,💧,🔥", company="🏢 Corp"),
    sent("rtl-1", "+1 415 555 3005", "+14155553005", "קבוצה עברית",
         name="\u202eمرحبا بالعالم\u200f", notes="שלום עולם\n\u202bנקודה\u202c", tags="עברית,عربي"),
    sent("zalgo-1", "+1 415 555 3006", "+14155553006", "café", name=ZALGO * 3),
    sent("nfd-1", "+1 415 555 3007", "+14155553007", "cafe\u0301", name="Rene\u0301e Zoe\u0308"),
    sent("zw-1", "+1 415\u200b555 3008", "+14155553008", "\u200bzero-width",
         name="\u200bZero\u200cWidth\u200d\ufeff", email="zw\u200b@example.com",
         tags="\u200b,\u200b,a\u200b"),
    sent("zw-2", "\ufeff+14155553009\u200e", "+14155553009", name="\u200b\u200c\u200d\ufeff"),
    sent("ctrl-1", "+1 415 555 3010", "+14155553010",
         name="Tab\tNew\nline\x00Nul\x07Bell\x1b[31m", notes="line1\r\nline2\x00\x1b[0m\x7f"),
    # --- sizes
    sent("big-notes", "+1 415 555 3011", "+14155553011", "vip", notes=TEN_MB_NOTES),
    sent("many-tags", "+1 415 555 3012", "+14155553012",
         tags=",".join(f"tag{i}" for i in range(500))),
    sent("long-things", "+1 415 555 3013", "+14155553013", "g" * 250,
         name="😀" * 500, tags="x" * 300 + ",VIP,vip,Vip", company="c" * 20_000),
    # --- phones with extensions, odd digits and prefixes
    sent("ext-1", "+1 415 555 3014 ext. 99", "+14155553014", "a,b"),
    sent("ext-2", "(415) 555-3015 x1234", "+14155553015"),
    sent("ext-3", "415.555.3016 #45", "+14155553016"),
    sent("fullwidth", "＋１ ４１５ ５５５ ３０１７", "+14155553017"),
    sent("arabic-digits", "٤١٥٥٥٥٣٠١٨", "+14155553018"),
    sent("tel-uri", "tel:+1-415-555-3019", "+14155553019"),
    sent("intl-00", "0044 20 7946 0018", "+442079460018", "x...y"),
    sent("country-de", "030 12345678", "+493012345678", country=" de "),
    # --- SQL meta-characters in values
    sent("sql-1", "+1 415 555 3020", "+14155553020", "'; DROP TABLE corpus_people; --",
         name="Robert'); DROP TABLE corpus_people;--", email="o'hara+test@example.com",
         notes="%_\\ ' \" ; -- /* */", tags="';--,\"x\""),
    sent("sql-2", "+1 415 555 3021", "+14155553021", "$1; SELECT * FROM corpus_people WHERE ''=''",
         'he said "hi" \'twice\'', "100%_off\\ LIKE '%'", name="%s %(x)s {0} ?"),
    # --- emails
    sent("email-1", "+1 415 555 3022", "+14155553022", email="Jane@EXAMPLE.COM"),
    sent("email-2", "+1 415 555 3023", "+14155553023", email="not-an-email"),
    sent("email-3", "+1 415 555 3024", "+14155553024", email="😀@example.com"),
    # --- duplicate crm_ids, duplicate phones, dates in the future
    sent("dup-id", "+1 415 555 3025", "+14155553025", "vip"),
    sent("dup-id", "+1 415 555 3026", "+14155553026", "a,b"),  # same id, another phone
    sent("same-row", "+1 415 555 3027", "+14155553027", name="Twin"),
    Row("same-row", "+1 415 555 3027", "collapsed", "+14155553027", (), {"name": "Twin"}),
    merged("m-old", "+14155553028", "+14155553028", "vip", updated_at="2026-01-01 00:00:00",
           name="Old name", email="old@example.com"),
    sent("m-future", "(415) 555-3028", "+14155553028", "🎉 party 🎉",
         updated_at="2999-12-31 23:59:59", name="Future name", notes=None),
    sent("future-tz", "+1 415 555 3029", "+14155553029", updated_at="9999-12-31T23:59:59-12:00"),
    sent("date-garbage", "+1 415 555 3030", "+14155553030", updated_at="yesterday-ish"),
    # --- odd crm_ids
    sent("  spaced   id  ", "+1 415 555 3031", "+14155553031", "vip"),
    sent("🆔-7", "+1 415 555 3032", "+14155553032"),
    sent("١٢٣", "+1 415 555 3033", "+14155553033"),
    sent(42, "+1 415 555 3034", "+14155553034", "no-erzycall-group"),
    sent("ungrouped-literal", "+1 415 555 3035", "+14155553035", UNGROUPED_KEY),
    # --- rejects
    rejected("r-null-phone", None, "missing_phone", "vip"),
    rejected("r-empty-phone", "", "missing_phone"),
    rejected("r-blank-phone", " \u200b ", "missing_phone"),
    rejected("r-vanity", "1-800-FLOWERS", "unparseable_phone", "🎉 party 🎉"),
    rejected("r-letter-o", "+1 (415) 555-3O40", "unparseable_phone"),
    rejected("r-two-numbers", "415-555-3041 / 415-555-3042", "unparseable_phone"),
    rejected("r-short", "12", "invalid_phone"),
    rejected("r-plus-999", "+999 1234567", "unparseable_phone"),
    rejected("r-sql-phone", "' OR 1=1 --", "unparseable_phone", "'; DROP TABLE corpus_people; --"),
    rejected("r-huge-phone", "4" * 10_000, "unparseable_phone"),
    rejected("r-country-xx", "415 555 3043", "unparseable_phone", country="XX"),
    rejected("r-many-groups", "+1 415 555 3044", "too_many_groups",
             *(f"many-{i:02}" for i in range(1, 22))),
    rejected(None, "+1 415 555 3045", "missing_crm_id", "vip"),
    rejected("", "+1 415 555 3046", "missing_crm_id"),
    rejected("\u200b", "+1 415 555 3047", "missing_crm_id"),
]

# Memberships that belong to nobody or to nothing: outer-join leftovers the sync must ignore.
EXTRA_MEMBERSHIPS = [(None, "vip", "grp_vip"), ("no-such-person", "vip", "grp_vip"),
                     ("null-1", None, "grp_vip"), ("null-1", "   ", "grp_trial")]


PEOPLE_COLUMNS = ("id", "name", "phone", "email", "notes", "tags", "country", "updated_at",
                  "company", "mood")


def load_corpus(h: SyncHarness, monkeypatch: pytest.MonkeyPatch, *, huge: bool = True) -> None:
    """The corpus into the CRM; ``huge=False`` keeps the 10 MB notes to 10 KB (for the tests
    that run many syncs and are about something else)."""
    # Untyped columns and no primary key: the CRM can hold anything, including repeated ids.
    people = sa.table("corpus_people", *(sa.column(c) for c in PEOPLE_COLUMNS))
    groups = sa.table("corpus_groups", sa.column("person"), sa.column("grp"), sa.column("erzy"))
    with h.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE corpus_people ({', '.join(PEOPLE_COLUMNS)})")
        conn.exec_driver_sql("CREATE TABLE corpus_groups (person, grp, erzy)")
    rows, memberships = [], list(EXTRA_MEMBERSHIPS)
    for row in CORPUS:
        values = dict.fromkeys(("name", "email", "notes", "tags", "country", "updated_at",
                                "company"))
        values.update(name=f"Person {row.crm_id}", mood="😐")
        values.update(row.fields)
        if not huge and values["notes"] is TEN_MB_NOTES:
            values["notes"] = TEN_MB_NOTES[:10_000]
        rows.append({"id": row.crm_id, "phone": row.phone, **values})
        memberships += [(row.crm_id, key, GROUPS[key]) for key in row.groups]
    seen = set()
    unique = [m for m in memberships if not (m in seen or seen.add(m))]
    with h.engine.begin() as conn:
        conn.execute(people.insert(), rows)
        conn.execute(groups.insert(), [{"person": p, "grp": g, "erzy": e} for p, g, e in unique])
    contacts_sql, memberships_sql = h.tmp_path / "corpus.sql", h.tmp_path / "corpus_groups.sql"
    contacts_sql.write_text(CONTACTS_SQL)
    memberships_sql.write_text(MEMBERSHIPS_SQL)
    monkeypatch.setenv("CRM_CONTACTS_SQL", str(contacts_sql))
    monkeypatch.setenv("CRM_MEMBERSHIPS_SQL", str(memberships_sql))


def expected_group_ids() -> dict[str, set[str]]:
    """Phone -> every ErzyCall group of every CRM row merged into it."""
    out: dict[str, set[str]] = {}
    by_id: dict[str, set[str]] = {}
    for row in CORPUS:  # memberships join on the raw crm_id, so repeated ids share groups
        by_id.setdefault(str(row.crm_id), set()).update(GROUPS[k] for k in row.groups)
    for row in CORPUS:
        if row.outcome != "rejected":
            out.setdefault(row.target, set()).update(g for g in by_id[str(row.crm_id)] if g)
    return out


def assert_api_valid(contact: dict[str, Any]) -> None:
    body = {k: contact[k] for k in E164_FIELDS if k in contact}
    validate_contact(body, partial=False, groups=REAL_GROUPS)  # raises if the API would refuse
    assert set(FIELDS) >= set(body)
    title = contact["title"]
    assert title.strip() and utf16_len(title) <= 200
    assert not any(unicodedata.category(ch) == "Cc" for ch in title)
    assert contact["notes"] is None or 1 <= utf16_len(contact["notes"]) <= 5000
    assert len(contact["tags"]) <= 20 and all(1 <= utf16_len(t) <= 50 for t in contact["tags"])
    assert len({t.casefold() for t in contact["tags"]}) == len(contact["tags"])
    assert set(contact["groupIds"]) <= REAL_GROUPS
    assert all(isinstance(v, str) for v in contact["customFields"].values())


def assert_sandbox_accepted_everything(h: SyncHarness) -> None:
    refused = [(r.method, r.path, r.status) for r in h.sandbox.request_log if r.status >= 400]
    assert refused == [], f"the sandbox refused requests: {refused[:5]}"


def clean_id(raw: Any) -> str:
    return "" if raw is None else clean_line(str(raw))


@pytest.fixture
def corpus(harness, monkeypatch) -> SyncHarness:
    load_corpus(harness, monkeypatch)
    return harness


@pytest.fixture
def light_corpus(harness, monkeypatch) -> SyncHarness:
    load_corpus(harness, monkeypatch, huge=False)
    return harness


def test_corpus_full_sync_accounts_for_every_row_and_sends_only_valid_contacts(corpus):
    h = corpus
    code, summaries = h.sync()
    assert code == 0, summaries
    (summary,) = summaries
    assert summary["status"] == "ok" and summary["failed"] == 0 and summary["deferred"] == 0
    assert_sandbox_accepted_everything(h)

    # Every row, exactly one outcome; rejects with the reason the corpus says.
    (run_id,) = {r["run_id"] for r in h.state().audit_rows()}
    audit = h.state().audit_rows(run_id=run_id)
    got = Counter()
    reasons: dict[str, list[str]] = {}
    for a in audit:
        assert a["outcome"] in ("created", "merged", "rejected"), a
        ids = a["crm_ids"].split(",") if a["crm_ids"] else [""]
        got[(ids[0], a["outcome"])] += 1
        if a["outcome"] == "rejected":
            assert a["error_code"] and a["error_message"], a
            reasons.setdefault(ids[0], []).append(a["error_code"])
    expected = Counter()
    for row in CORPUS:
        kind = {"sent": "created", "merged": "merged", "rejected": "rejected"}.get(row.outcome)
        if kind:
            expected[(clean_id(row.crm_id), kind)] += 1
    assert got == expected
    for row in CORPUS:
        if row.outcome == "rejected":
            assert row.target in reasons[clean_id(row.crm_id)], (row.crm_id, reasons)
    assert summary["created"] == sum(1 for r in CORPUS if r.outcome == "sent")
    assert summary["merged"] == sum(1 for r in CORPUS if r.outcome == "merged")
    assert summary["rejected"] == sum(1 for r in CORPUS if r.outcome == "rejected")

    # ErzyCall holds exactly the contacts the CRM says, each API-valid, with all its groups.
    remote = h.remote_by_phone()
    assert set(remote) == {r.target for r in CORPUS if r.outcome == "sent"}
    groups = expected_group_ids()
    for phone, contact in remote.items():
        assert_api_valid(contact)
        assert sorted(contact["groupIds"]) == sorted(groups[phone]), phone

    # A few rows in detail.
    assert utf16_len(remote["+14155553011"]["notes"]) == 5000  # 10 MB of notes, cut
    assert remote["+14155553012"]["tags"] == [f"tag{i}" for i in range(20)]  # 500 tags, 20 kept
    assert remote["+14155553013"]["tags"] == ["x" * 50, "VIP"]
    assert remote["+14155553014"]["customFields"]["phone_extension"] == "99"
    assert remote["+14155553007"]["title"] == unicodedata.normalize("NFC", "Rene\u0301e Zoe\u0308")
    # ZWSP and BOM go; a ZWNJ between letters is kept (scripts such as Persian need it).
    assert remote["+14155553008"]["title"].replace("\u200c", "") == "ZeroWidth"
    assert remote["+14155553008"]["email"] == "zw@example.com"
    assert remote["+14155553009"]["title"] == "+14155553009"  # only invisible characters
    assert remote["+14155553001"]["title"] == "+14155553001"  # NULL name
    assert remote["+14155553022"]["email"] == "Jane@example.com"
    assert remote["+14155553023"]["email"] is None
    assert remote["+14155553020"]["title"] == "Robert'); DROP TABLE corpus_people;--"
    future = remote["+14155553028"]
    assert future["title"] == "Future name" and future["email"] == "old@example.com"
    assert "👩‍👩‍👧‍👦" in remote["+14155553004"]["title"]

    # The CRM is untouched and a rerun costs nothing.
    with h.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM corpus_people")).scalar() == len(CORPUS)
    code, summaries = h.sync()
    assert code == 0, summaries
    assert h.writes_since_sync() == []
    assert summaries[0]["requests"] == 0 and summaries[0]["failed"] == 0
    assert summaries[0]["unchanged"] == len(remote)


def test_weird_group_keys_are_partitions_that_never_reach_sql(light_corpus):
    h = light_corpus
    statements: list[str] = []

    def spy(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        if str(conn.engine.url) == h.crm_url:
            statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", spy)
    try:
        usable = [k for k in WEIRD_KEYS if usable_partition_key(k)]
        assert "x...y" not in usable and len(usable) >= 10
        groups = expected_group_ids()
        members = {
            key: {r.target for r in CORPUS if r.outcome != "rejected" and key in _groups_of(r)}
            for key in usable
        }
        sent_so_far: set[str] = set()
        for key in usable:
            code, summaries = h.sync(groups=[key])
            assert code == 0, (key, summaries)
            assert summaries[0]["failed"] == 0, (key, summaries)
            remote = h.remote_by_phone()
            # The "_ungrouped" partition means "in no CRM group", so a CRM group literally
            # called "_ungrouped" is synced by full runs only.
            expected = _ungrouped_phones() if key == UNGROUPED_KEY else members[key]
            assert expected <= set(remote), (key, expected - set(remote))
            new = set(remote) - sent_so_far
            assert new <= expected, (key, new)
            for phone in expected:
                assert sorted(remote[phone]["groupIds"]) == sorted(groups[phone]), (key, phone)
            sent_so_far = set(remote)
        assert_sandbox_accepted_everything(h)

        code, _ = h.sync(groups=["x...y"])  # cannot be a partition: refused, not mangled
        assert code == 2

        code, summaries = h.sync()  # the full run sends the rest...
        assert code == 0 and summaries[0]["failed"] == 0
        remote = h.remote_by_phone()
        assert set(remote) == {r.target for r in CORPUS if r.outcome == "sent"}
        for phone, contact in remote.items():
            assert_api_valid(contact)
            assert sorted(contact["groupIds"]) == sorted(groups[phone]), phone
        code, summaries = h.sync()  # ...and a rerun nothing
        assert code == 0 and h.writes_since_sync() == [] and summaries[0]["requests"] == 0
        for key in ("'; DROP TABLE corpus_people; --", "a,b"):
            code, summaries = h.sync(groups=[key])
            assert code == 0 and h.writes_since_sync() == [], key
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", spy)

    assert statements, "the spy saw no CRM query"
    leaked = [(k, s) for s in statements for k in GROUPS if k in s and k not in ("vip", "a,b")]
    assert leaked == []
    # Only the user's two queries run, as written (the memberships one also wrapped to list
    # its distinct group keys): no group key ever becomes SQL text.
    allowed = {
        CONTACTS_SQL.strip(),
        MEMBERSHIPS_SQL.strip(),
        distinct_group_keys_sql(MEMBERSHIPS_SQL.strip()),
        columns_probe_sql(CONTACTS_SQL.strip()),  # the CLI's check before it launches
        columns_probe_sql(MEMBERSHIPS_SQL.strip()),
    }
    assert {s.strip() for s in statements} <= allowed
    with h.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM corpus_people")).scalar() == len(CORPUS)
    assert_sandbox_accepted_everything(h)


def test_partition_run_merges_a_duplicate_from_another_group(harness):
    """A group run must see the same phone's records in other groups, or the contact gets this
    group's fields and groups only and runs of the two groups overwrite each other."""
    harness.add_people([person(1, full_name="Older"), person(2, phone="+1 415 555 1001",
                                                             full_name="Newer")])
    harness.add_memberships([(1, "vip"), (2, "trial")])
    assert harness.sync(groups=["vip"])[0] == 0
    contact = harness.remote_by_phone()["+14155551001"]
    assert (contact["title"], sorted(contact["groupIds"])) == ("Newer", ["grp_trial", "grp_vip"])


def _groups_of(row: Row) -> set[str]:
    """Every CRM group of the row's crm_id (memberships join on the raw id)."""
    return {k for r in CORPUS if str(r.crm_id) == str(row.crm_id) for k in r.groups}


def _ungrouped_phones() -> set[str]:
    return {r.target for r in CORPUS if r.outcome != "rejected" and not _groups_of(r)}
