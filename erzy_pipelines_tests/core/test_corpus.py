"""Properties of normalize + dedupe + payload *together*, on nasty rows, judged by the API's rules.

test_normalize.py and test_dedupe.py check each step with the test's own idea of "valid"; here
whole batches go through the same chain the assets run, and every contact that would be sent is
checked with the sandbox's validator (the documented API limits), every row must end in exactly
one outcome, and normalizing is deterministic and a fixpoint (so a rerun never sees a change
that is not in the CRM).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erzy_pipelines.core import Contact, normalize_row, normalize_rows
from erzy_pipelines.core.dedupe import dedupe
from erzy_pipelines.core.payload import create_body, payload_hash, to_payload
from erzy_pipelines.core.text import clean_line
from erzy_pipelines.sandbox.validation import validate_contact
from erzy_pipelines_tests.core._phones import CRM_IDS, valid_phone_and_country

NASTY_CHARS = (  # noqa: SIM905 - one string per group reads better than 45 literals
    "a Z 0 , ; ' \" % _ \\ - -- /* */ @ . + # x ext"
    " \u200b \u200c \u200d \ufeff \u202e \u200f \u2066"  # zero-width, bidi controls
    " \u0301 \u0308 \u0336 e\u0301"  # combining marks
    " \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1eb\U0001f1f7 \U0001f600 \ufe0f"  # emoji
    " \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u0660\u0661\u0662"  # RTL, digits
    " \x00 \x07 \x1b \t \n \r \x7f \ud800"  # control characters, a lone surrogate
).split(" ") + [" "]
NASTY_TEXT = st.lists(st.sampled_from(NASTY_CHARS), max_size=60).map("".join)
BIG_TEXT = st.builds(  # well past every limit (5,000 for notes), whatever cleaning removes
    lambda piece, n: (piece + "ab") * n,
    st.lists(st.sampled_from(NASTY_CHARS), min_size=3, max_size=20).map("".join),
    st.integers(1000, 3000),
)
PHONE_POOL = [
    "+1 202 555 0101", "(202) 555-0101", "202.555.0101 x7", "tel:+1-202-555-0102",
    "\uff0b\uff11 \uff12\uff10\uff12 \uff15\uff15\uff15 \uff10\uff11\uff10\uff13",
    "0049 30 1234567", "030 1234567", "+44 20 7946 0018", "1-800-FLOWERS", "+1 202 555 O1O4",
    "202-555-0105 / 202-555-0106", "12", "", None, "\u200b", "' OR 1=1 --", "4" * 5000,
]
PHONE = st.sampled_from(PHONE_POOL) | NASTY_TEXT
TAGS = st.one_of(
    st.none(),
    NASTY_TEXT,
    st.integers(0, 600).map(lambda n: ",".join(f"t{i % 37}" for i in range(n))),
    st.lists(NASTY_TEXT, max_size=30).map(",".join),
)
WHEN = st.one_of(
    st.none(),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.sampled_from(["2999-12-31 23:59:59", "9999-12-31T23:59:59-12:00", "yesterday", ""]),
)
ROW_CRM_ID = st.one_of(st.sampled_from(["1", "2", "3", " 1 ", "\u200b", "", None, 7]), NASTY_TEXT)
GROUP_IDS = st.lists(st.sampled_from([f"grp_{i}" for i in range(25)]), max_size=22)
ROW = st.fixed_dictionaries(
    {
        "crm_id": ROW_CRM_ID,
        "phone": PHONE,
        "title": st.one_of(st.none(), NASTY_TEXT, BIG_TEXT),
        "email": st.one_of(
            st.none(),
            st.sampled_from(["Jane@EXAMPLE.COM", "not-an-email", "o'hara@example.com", ""]),
            st.builds(lambda a, b: f"{a}@{b}.com", NASTY_TEXT, NASTY_TEXT),
        ),
        "notes": st.one_of(st.none(), NASTY_TEXT, BIG_TEXT),
        "tags": TAGS,
        "country": st.sampled_from([None, "", "us", " DE ", "XX", "Germany"]),
        "updated_at": WHEN,
        "group_ids": GROUP_IDS,
        "custom_company": st.one_of(st.none(), NASTY_TEXT),
    }
)
KNOWN_GROUPS = [f"grp_{i}" for i in range(25)]
# The same nasty rows, but mostly with a real id and a valid number of some country, so most
# examples give a Contact and the fixpoint half of the test below runs on them.
SENDABLE_ROW = st.builds(
    lambda row, crm_id, pair: {**row, "crm_id": crm_id, "phone": pair[0], "country": pair[1]},
    ROW,
    st.one_of(CRM_IDS, CRM_IDS, CRM_IDS, ROW_CRM_ID),
    st.one_of(
        valid_phone_and_country(),
        valid_phone_and_country(),
        valid_phone_and_country(),
        st.tuples(PHONE, st.sampled_from([None, "", "us", " DE ", "XX", "Germany"])),
    ),
)


def assert_api_accepts(contact: Contact) -> None:
    payload = to_payload(contact)
    body = create_body(payload)
    validate_contact(body, partial=False, groups=KNOWN_GROUPS)
    json.dumps(body, ensure_ascii=False).encode()  # what the client sends: no lone surrogates
    payload_hash(payload)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.lists(ROW, max_size=12))
def test_batches_end_in_one_outcome_per_row_and_only_api_valid_contacts(rows):
    contacts, rejects = normalize_rows(rows)
    assert len(contacts) + len(rejects) == len(rows)
    deduped, merges, dedupe_rejects = dedupe(contacts)

    for c in deduped:
        assert_api_accepts(c)
    assert len({c.phone for c in deduped}) == len(deduped)

    # Each normalized record ends exactly once: survivor, merged, or rejected by dedupe. A
    # crm_id repeated on one phone is one record (an exact duplicate row).
    records = Counter((c.crm_ids[0], c.phone) for c in contacts)
    ends = Counter((c.crm_ids[0], c.phone) for c in deduped)
    ends += Counter((m.merged_crm_id, m.phone) for m in merges)
    ends += Counter((r.crm_id, r.phone) for r in dedupe_rejects)
    assert set(ends) == set(records) and max(ends.values(), default=1) == 1
    for reject in [*rejects, *dedupe_rejects]:
        assert reject.reason and reject.detail


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(SENDABLE_ROW)
def test_normalizing_is_deterministic_and_a_fixpoint(row: dict[str, Any]):
    first, again = normalize_row(row), normalize_row(dict(row))
    assert first == again
    if not isinstance(first, Contact):
        return
    payload = to_payload(first)
    # Normalizing is idempotent: what we send, read back as a CRM row, gives the same payload
    # (no cut leaves a trailing space, no mark or joiner that a second pass would change).
    echoed = {
        "crm_id": first.crm_ids[0],
        "phone": payload["phone"],
        "title": payload["title"],
        "email": payload["email"],
        "notes": payload["notes"],
        "tags": ",".join(payload["tags"]),
        "group_ids": payload["groupIds"],
        **{f"custom_{k}": v for k, v in payload["customFields"].items()},
    }
    second = normalize_row(echoed)
    assert isinstance(second, Contact), second
    assert to_payload(second) == payload
    assert clean_line(first.crm_ids[0]) == first.crm_ids[0]
