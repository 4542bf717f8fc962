from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erzy_pipelines.core import Contact, Reject, normalize_region, normalize_row, normalize_rows
from erzy_pipelines.core.payload import to_payload
from erzy_pipelines.core.text import utf16_len
from erzy_pipelines_tests.core._phones import CRM_IDS, valid_phone_and_country

ARABIC_INDIC = "\u0660\u0661\u0660\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667"
HEBREW = "\u05d3\u05d5\u05d3 \u05db\u05d4\u05df"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def row(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"crm_id": "c1", "phone": "+12025550123", "title": "Ann"}
    base.update(fields)
    return base


def contact(**fields: Any) -> Contact:
    result = normalize_row(row(**fields))
    assert isinstance(result, Contact), result
    return result


def reject(**fields: Any) -> Reject:
    result = normalize_row(row(**fields))
    assert isinstance(result, Reject), result
    return result


# --- phones ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "country", "expected"),
    [
        ("+1 202-555-0123", None, "+12025550123"),
        ("(202) 555-0123", None, "+12025550123"),  # default region US
        ("202.555.0123", "us", "+12025550123"),
        ("030 1234567", "DE", "+49301234567"),
        ("030 1234567", " de ", "+49301234567"),  # trimmed, any case
        ("+49 30 1234567", None, "+49301234567"),
        ("0049 30 1234567", None, "+49301234567"),  # 00 prefix with a US default
        ("0049 30 1234567", "FR", "+49301234567"),  # international: country ignored
        ("020 7946 0018", "GB", "+442079460018"),
        ("020 7946 0018", "uk", "+442079460018"),  # UK alias
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("+33 6 12 34 56 78", "Germany", "+33612345678"),  # unknown country, international
        ("03-1234-5678", "JP", "+81312345678"),
        ("+91 98765 43210", None, "+919876543210"),
        ("+55 11 91234-5678", None, "+5511912345678"),
        ("0412 345 678", "AU", "+61412345678"),
        (ARABIC_INDIC, "EG", "+201001234567"),
        ("tel:+1-202-555-0123", None, "+12025550123"),
        ("(+49) 30 1234567", None, "+49301234567"),
        ("+49 (0)30 1234567", None, "+49301234567"),  # trunk prefix in parentheses
        ("011 49 30 1234567", None, "+49301234567"),  # US international prefix
        ("+39 06 6982 1234", None, "+390669821234"),  # Italian leading zero kept
        ("+1-202-555-0123,,,", None, "+12025550123"),
        ("\uff0b1 202 555 0123", None, "+12025550123"),  # fullwidth plus
        ("+1 202\u200b555 0123", None, "+12025550123"),  # zero-width space pasted in
        (12025550123, None, "+12025550123"),  # numeric column
        (12025550123.0, None, "+12025550123"),
        (b"+12025550123", None, "+12025550123"),
    ],
)
def test_phone_accepted(phone: Any, country: str | None, expected: str) -> None:
    c = contact(phone=phone, country=country)
    assert c.phone == expected
    assert E164.match(c.phone)


@pytest.mark.parametrize(
    ("phone", "country", "reason", "detail"),
    [
        (None, None, "missing_phone", "empty"),
        ("   ", None, "missing_phone", "empty"),
        ("", None, "missing_phone", "empty"),
        ("1-800-FLOWERS", None, "unparseable_phone", "letters"),
        ("+1 202 555 O123", None, "unparseable_phone", "letters"),  # letter O for zero
        ("+1 (202) 555-0123 (mobile)", None, "unparseable_phone", "letters"),
        ("call me", None, "unparseable_phone", "not a phone number"),
        ("202-555-0123, 202-555-0199", None, "unparseable_phone", "not a phone number"),
        ("202-555-0123 / 202-555-0199", None, "unparseable_phone", "not a phone number"),
        ("+12025550123 +12025550199", None, "unparseable_phone", "not a phone number"),
        ("202-555-0123 x", None, "unparseable_phone", "letters"),
        ("+", None, "unparseable_phone", "not a phone number"),
        ("030 1234567", "Germany", "unparseable_phone", "unknown country 'Germany'"),
        ("030 1234567", 49, "unparseable_phone", "unknown country"),
        ("1" * 300, None, "unparseable_phone", "longer than 250"),
        ("12345", None, "invalid_phone", "too short"),
        ("+1 202 555 01234567", None, "invalid_phone", "too long"),
        ("+999 1234567", None, "unparseable_phone", "not a phone number"),
        ("+1 000 555 0123", None, "invalid_phone", "not a valid number"),
        ("030 1234567", None, "invalid_phone", "not a valid number"),  # German number read as US
    ],
)
def test_phone_rejected(phone: Any, country: Any, reason: str, detail: str) -> None:
    r = reject(phone=phone, country=country)
    assert (r.crm_id, r.reason) == ("c1", reason)
    assert detail in r.detail
    expected_raw = None if phone is None or not str(phone).strip() else str(phone)[:100]
    assert r.phone == expected_raw


def test_unknown_default_region_rejects_national_numbers_only() -> None:
    bad = normalize_row(row(phone="2025550123"), default_region="XX")
    assert (bad.reason, bad.detail) == (
        "unparseable_phone",
        "national-format number but unknown region 'XX'",
    )
    assert normalize_row(row(phone="+12025550123"), default_region="XX").phone == "+12025550123"
    assert normalize_row(row(phone="030 1234567"), default_region="de").phone == "+49301234567"


@pytest.mark.parametrize(
    ("phone", "e164", "extension"),
    [
        ("+1 202-555-0123 ext. 45", "+12025550123", "45"),
        ("202-555-0123 x7", "+12025550123", "7"),
        ("+1 202 555 0123#890", "+12025550123", "890"),
        ("tel:+1-202-555-0123;ext=12", "+12025550123", "12"),
        ("+49 30 1234567 extension 3", "+49301234567", "3"),
    ],
)
def test_extension_moves_to_custom_field(phone: str, e164: str, extension: str) -> None:
    c = contact(phone=phone, custom_phone_extension="999")
    assert c.phone == e164
    assert dict(c.custom_fields)["phone_extension"] == extension
    assert "extension_moved_to_custom_field" in c.warnings


def test_no_extension_no_warning() -> None:
    c = contact(custom_phone_extension="12")
    assert dict(c.custom_fields) == {"phone_extension": "12"}
    assert c.warnings == ()


# --- titles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "expected", "warnings"),
    [
        ("  Ann   Lee ", "Ann Lee", ()),
        ("Ann\nLee", "Ann Lee", ()),
        ("Zo\u00eb", "Zo\u00eb", ()),
        ("Zoe\u0308", "Zo\u00eb", ()),  # NFC
        ("\u200b\u200e", "+12025550123", ("title_from_phone",)),
        (None, "+12025550123", ("title_from_phone",)),
        ("", "+12025550123", ("title_from_phone",)),
        (HEBREW, HEBREW, ()),  # RTL
        ("\U0001f600 Smile", "\U0001f600 Smile", ()),
        (12345, "12345", ()),
        ("x" * 200, "x" * 200, ()),
        ("x" * 201, "x" * 200, ("title_truncated",)),
        ("x" * 199 + "e\u0301", "x" * 199 + "\u00e9", ()),  # NFC first: fits
        ("x" * 199 + "\U0001f600", "x" * 199, ("title_truncated",)),  # 201 UTF-16 units
    ],
)
def test_title(title: Any, expected: str, warnings: tuple[str, ...]) -> None:
    c = contact(title=title)
    assert (c.title, c.warnings) == (expected, warnings)


# --- emails ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "expected", "dropped"),
    [
        (" Ann.Lee@Example.COM ", "Ann.Lee@example.com", False),
        ("ann+tag@sub.example.co.uk", "ann+tag@sub.example.co.uk", False),
        ("ann\u200b@example.com", "ann@example.com", False),
        ("j\u00f6rg@m\u00fcller.de", "j\u00f6rg@m\u00fcller.de", False),
        (None, None, False),
        ("  ", None, False),
        ("ann", None, True),
        ("ann@example", None, True),
        ("ann@@example.com", None, True),
        ("a@b@example.com", None, True),
        ("ann lee@example.com", None, True),
        ("ann@example..com", None, True),
        ("ann@.example.com", None, True),
        ("ann@example.com.", None, True),
        ("a" * 250 + "@x.com", None, True),  # > 254
    ],
)
def test_email(email: Any, expected: str | None, dropped: bool) -> None:
    c = contact(email=email)
    assert c.email == expected
    assert ("invalid_email_dropped" in c.warnings) is dropped


# --- notes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("notes", "expected", "warnings"),
    [
        (None, None, ()),
        (" \n ", None, ()),
        ("line1\r\nline2\t\x00end\u200b", "line1\nline2\tend", ()),
        ("n" * 5000, "n" * 5000, ()),
        ("n" * 5001, "n" * 5000, ("notes_truncated",)),
    ],
)
def test_notes(notes: Any, expected: str | None, warnings: tuple[str, ...]) -> None:
    c = contact(notes=notes)
    assert (c.notes, c.warnings) == (expected, warnings)


def test_ten_megabyte_notes() -> None:
    c = contact(notes="word \u200b" * 1_500_000)
    assert c.notes is not None and len(c.notes) <= 5000
    assert c.warnings == ("notes_truncated",)


# --- tags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "expected", "warnings"),
    [
        (None, (), ()),
        ("", (), ()),
        ("vip", ("vip",), ()),
        (" vip , Lead,, ,VIP,lead ,new", ("vip", "Lead", "new"), ()),
        ("Stra\u00dfe,STRASSE", ("Stra\u00dfe",), ()),  # casefold
        ("Cafe\u0301,caf\u00e9", ("Caf\u00e9",), ()),  # NFC before comparing
        ("a\u200bb,a\x00b", ("ab",), ()),
        (["x, y", "z", None], ("x", "y", "z"), ()),
        ("t" * 51, ("t" * 50,), ("tag_truncated",)),
        ("t" * 60 + "," + "t" * 55, ("t" * 50,), ("tag_truncated",)),  # equal once cut
        (",".join(f"t{i}" for i in range(20)), tuple(f"t{i}" for i in range(20)), ()),
        (
            ",".join(f"t{i}" for i in range(500)),
            tuple(f"t{i}" for i in range(20)),
            ("tags_truncated",),
        ),
        (",".join(["a"] * 30 + ["b"]), ("a", "b"), ()),  # duplicates do not count to 20
    ],
)
def test_tags(tags: Any, expected: tuple[str, ...], warnings: tuple[str, ...]) -> None:
    c = contact(tags=tags)
    assert (c.tags, c.warnings) == (expected, warnings)


# --- groups, custom fields, ids, timestamps --------------------------------------------------


@pytest.mark.parametrize(
    ("group_ids", "expected"),
    [
        (None, ()),
        ([], ()),
        (["grp_b", "grp_a", "grp_b", None, "", " "], ("grp_a", "grp_b")),
        ("grp_b,grp_a", ("grp_a", "grp_b")),
        ({"grp_x"}, ("grp_x",)),
        ([f"g{i:02}" for i in range(20)], tuple(f"g{i:02}" for i in range(20))),
    ],
)
def test_group_ids(group_ids: Any, expected: tuple[str, ...]) -> None:
    assert contact(group_ids=group_ids).group_ids == expected


def test_more_than_twenty_groups_is_a_reject() -> None:
    r = reject(group_ids=[f"g{i}" for i in range(21)])
    assert (r.reason, r.crm_id, r.phone) == ("too_many_groups", "c1", "+12025550123")
    assert "21" in r.detail


def test_group_keys_sorted_unique() -> None:
    assert contact(group_keys=["vip", "leads", "vip"]).group_keys == ("leads", "vip")


def test_custom_fields() -> None:
    c = contact(
        custom_tier="gold",
        custom_score=7,
        custom_since=dt.date(2020, 5, 1),
        custom_seen=dt.datetime(2024, 1, 2, 3, 4),
        custom_active=False,
        custom_empty=None,
        custom_blank="  ",
        custom_="ignored",
        not_custom="ignored",
    )
    assert c.custom_fields == (
        ("active", "false"),
        ("score", "7"),
        ("seen", "2024-01-02T03:04:00"),
        ("since", "2020-05-01"),
        ("tier", "gold"),
    )


@pytest.mark.parametrize("crm_id", [None, "", "   ", "\u200b"])
def test_missing_crm_id(crm_id: Any) -> None:
    r = reject(crm_id=crm_id)
    assert (r.crm_id, r.reason, r.phone) == (None, "missing_crm_id", "+12025550123")


@pytest.mark.parametrize(("crm_id", "expected"), [(42, "42"), (" A-7 ", "A-7"), (b"x", "x")])
def test_crm_id_as_text(crm_id: Any, expected: str) -> None:
    assert contact(crm_id=crm_id).crm_ids == (expected,)


@pytest.mark.parametrize(
    ("updated_at", "expected"),
    [
        (dt.datetime(2024, 3, 1, 12, 0), "2024-03-01T12:00:00.000000+00:00"),
        ("2024-03-01T13:00:00+01:00", "2024-03-01T12:00:00.000000+00:00"),
        ("not a date", None),
        (None, None),
    ],
)
def test_updated_at(updated_at: Any, expected: str | None) -> None:
    assert contact(updated_at=updated_at).updated_at == expected


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"title": ["a"]}, "title: expected text, got list"),
        ({"email": 3.5j}, "email: expected text, got complex"),
        ({"notes": float("nan")}, "notes: expected text"),
        ({"phone": {"n": 1}}, "phone: expected text, got dict"),
        ({"tags": 5.5}, None),  # a number is text "5.5": accepted below
        ({"group_ids": 7}, "group_ids: expected a list of ids, got int"),
        ({"group_ids": [["nested"]]}, "group_ids: expected text, got list"),
    ],
)
def test_bad_types_become_invalid_row(fields: dict[str, Any], detail: str | None) -> None:
    result = normalize_row(row(**fields))
    if detail is None:
        assert isinstance(result, Contact) and result.tags == ("5.5",)
    else:
        assert isinstance(result, Reject)
        assert (result.reason, result.crm_id) == ("invalid_row", "c1")
        assert detail in result.detail


class ExplodingRow(dict):
    def get(self, key: str, default: Any = None) -> Any:
        if key == "title":
            raise RuntimeError("driver hiccup")
        return super().get(key, default)


def test_row_whose_access_raises_is_invalid_row() -> None:
    r = normalize_row(ExplodingRow(row()))
    assert isinstance(r, Reject) and r.reason == "invalid_row" and "driver hiccup" in r.detail


def test_not_a_mapping_is_invalid_row() -> None:
    r = normalize_row(["c1", "+12025550123"])  # type: ignore[arg-type]
    assert isinstance(r, Reject) and (r.reason, r.crm_id) == ("invalid_row", None)


def test_all_null_row() -> None:
    keys = ["crm_id", "title", "phone", "email", "notes", "tags", "country", "updated_at"]
    r = normalize_row(dict.fromkeys(keys))
    assert isinstance(r, Reject) and r.reason == "missing_crm_id"
    r = normalize_row({**dict.fromkeys(keys), "crm_id": "c9"})
    assert isinstance(r, Reject) and r.reason == "missing_phone"


def test_full_row() -> None:
    c = contact(
        crm_id=17,
        title=" Dr. Zo\u00eb  O'Brien ",
        phone="(202) 555-0123 ext 9",
        email="ZOE@Example.org",
        notes="Prefers mornings",
        tags="VIP, vip, Leads",
        country="us",
        updated_at="2024-03-01T12:00:00Z",
        custom_tier="gold",
        group_ids=["grp_vip"],
        group_keys=["vip"],
    )
    assert c == Contact(
        phone="+12025550123",
        title="Dr. Zo\u00eb O'Brien",
        email="ZOE@example.org",
        notes="Prefers mornings",
        tags=("VIP", "Leads"),
        group_ids=("grp_vip",),
        group_keys=("vip",),
        custom_fields=(("phone_extension", "9"), ("tier", "gold")),
        crm_ids=("17",),
        updated_at="2024-03-01T12:00:00.000000+00:00",
        warnings=("extension_moved_to_custom_field",),
    )


def test_normalize_rows_splits_in_order() -> None:
    contacts, rejects = normalize_rows(
        [row(crm_id="a"), row(crm_id="b", phone=None), row(crm_id="c"), row(crm_id=None)]
    )
    assert [c.crm_ids for c in contacts] == [("a",), ("c",)]
    assert [(r.crm_id, r.reason) for r in rejects] == [
        ("b", "missing_phone"),
        (None, "missing_crm_id"),
    ]


@pytest.mark.parametrize(
    ("code", "expected"), [("us", "US"), (" gb ", "GB"), ("UK", "GB"), ("XX", None), (1, None)]
)
def test_normalize_region(code: Any, expected: str | None) -> None:
    assert normalize_region(code) == expected


# --- properties ------------------------------------------------------------------------------

KEYS = ("crm_id", "title", "phone", "email", "notes", "tags", "country", "updated_at")
PHONES = st.sampled_from(
    ["+12025550123", "202 555 0124", "0049 30 1234567", "+44 20 7946 0018 x12", "030 1234567"]
)
TRICKY = "\u200b\u200d\u0301\ufe0f a,\U0001f468\u05d3"
TEXT = st.text(max_size=300) | st.text(alphabet=TRICKY, max_size=80)
VALUE = st.none() | TEXT | st.integers() | st.binary(max_size=20) | PHONES | st.floats()
GROUPS = st.none() | st.lists(st.none() | st.text(max_size=8), max_size=25)
FIELDS = {k: VALUE for k in KEYS if k not in ("phone", "country")} | {
    # Mostly real ids: a row without one is rejected before anything else is looked at.
    "crm_id": st.one_of(CRM_IDS, CRM_IDS, CRM_IDS, st.text(alphabet="abc123 -", min_size=1), VALUE),
}
PHONE_AND_COUNTRY = st.one_of(  # mostly valid numbers of many countries, so most rows give a
    valid_phone_and_country(),  # Contact and the API checks below run on them; still fuzzed
    valid_phone_and_country(),
    valid_phone_and_country(),
    st.tuples(st.one_of(PHONES, VALUE), st.one_of(st.sampled_from(["us", "DE", " gb "]), VALUE)),
)
ROWS = st.builds(
    lambda fields, pair: {**fields, "phone": pair[0], "country": pair[1]},
    st.fixed_dictionaries(
        FIELDS,
        optional={"group_ids": GROUPS, "group_keys": GROUPS, "custom_x": VALUE, "custom_y": VALUE},
    ),
    PHONE_AND_COUNTRY,
)


def assert_api_valid(c: Contact) -> None:
    p = to_payload(c)
    assert 1 <= len(p["title"]) <= 200 and utf16_len(p["title"]) <= 200
    assert E164.match(p["phone"])
    assert p["notes"] is None or 1 <= utf16_len(p["notes"]) <= 5000
    assert len(p["tags"]) <= 20 and all(1 <= utf16_len(t) <= 50 for t in p["tags"])
    assert len({t.casefold() for t in p["tags"]}) == len(p["tags"])
    assert len(p["groupIds"]) <= 20
    assert p["email"] is None or ("@" in p["email"] and len(p["email"]) <= 254)
    assert all(isinstance(v, str) for v in p["customFields"].values())
    assert c.crm_ids and c.crm_ids[0].strip()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ROWS)
def test_normalize_row_never_raises_and_is_api_valid(r: dict[str, Any]) -> None:
    result = normalize_row(r)
    if isinstance(result, Contact):
        assert_api_valid(result)
    else:
        assert isinstance(result, Reject) and result.reason and result.detail


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), VALUE, max_size=8), PHONES)
def test_arbitrary_mappings_never_raise(r: dict[str, Any], phone: str) -> None:
    for candidate in (r, {**r, "crm_id": "c1", "phone": phone}):
        result = normalize_row(candidate)
        if isinstance(result, Contact):
            assert_api_valid(result)
        else:
            assert result.reason


SENDABLE = st.fixed_dictionaries(
    {k: VALUE for k in ("title", "email", "notes", "tags", "updated_at")}
    | {"crm_id": st.just("c1"), "phone": PHONES, "country": st.sampled_from([None, "DE"])},
    optional={"group_ids": GROUPS, "custom_x": VALUE},
)


@settings(max_examples=200, deadline=None)
@given(SENDABLE)
def test_rows_with_good_phones_give_api_valid_contacts(r: dict[str, Any]) -> None:
    result = normalize_row(r)
    if isinstance(result, Contact):
        assert_api_valid(result)
    else:  # only a type the row cannot hold, or too many groups
        assert result.reason in ("invalid_row", "too_many_groups", "invalid_phone"), result
