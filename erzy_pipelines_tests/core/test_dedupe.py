from __future__ import annotations

import gc
import time
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erzy_pipelines.core import Contact, Merge, Reject, dedupe
from erzy_pipelines.core.dedupe import natural_key

P1, P2 = "+12025550123", "+12025550124"


def mk(crm_id: str, phone: str = P1, **fields: Any) -> Contact:
    base: dict[str, Any] = {
        "phone": phone,
        "title": f"T{crm_id}",
        "email": None,
        "notes": None,
        "tags": (),
        "group_ids": (),
        "group_keys": (),
        "custom_fields": (),
        "crm_ids": (crm_id,),
        "updated_at": None,
        "warnings": (),
    }
    base.update(fields)
    return Contact(**base)


def ts(day: int) -> str:
    return f"2024-01-{day:02}T00:00:00.000000+00:00"


def test_singletons_pass_through_sorted_by_phone() -> None:
    a, b = mk("a", P2), mk("b", P1)
    assert dedupe([a, b]) == ([b, a], [], [])


@pytest.mark.parametrize(
    ("records", "survivor"),
    [
        ([mk("a", updated_at=ts(1)), mk("b", updated_at=ts(2))], "b"),  # most recent wins
        ([mk("a", updated_at=ts(2)), mk("b", updated_at=None)], "a"),  # None is oldest
        ([mk("b", updated_at=ts(1)), mk("a", updated_at=ts(1))], "a"),  # tie: smallest id
        ([mk("c10"), mk("c9"), mk("c2")], "c2"),  # natural order
        (
            # same instant, different offsets: recency compares moments, not strings
            [mk("a", updated_at="2024-01-01T10:00:00+02:00"), mk("b", updated_at=ts(1))],
            "a",
        ),
        ([mk("a", updated_at="garbage"), mk("b", updated_at=ts(1))], "b"),
    ],
)
def test_survivor(records: list[Contact], survivor: str) -> None:
    for order in (records, records[::-1]):  # input order never matters
        contacts, merges, rejects = dedupe(order)
        assert [c.crm_ids[0] for c in contacts] == [survivor]
        assert {m.survivor_crm_id for m in merges} == {survivor}
        assert rejects == []


def test_merge_rules() -> None:
    new = mk(
        "n",
        title="+12025550123",
        warnings=("title_from_phone",),
        email=None,
        notes="newest notes",
        tags=("VIP", "b"),
        group_ids=("g2",),
        group_keys=("k2",),
        custom_fields=(("tier", "gold"),),
        updated_at=ts(3),
    )
    mid = mk(
        "m",
        title="Middle Name",
        email="mid@x.com",
        tags=("vip", "c"),
        group_ids=("g1", "g2"),
        group_keys=("k1",),
        custom_fields=(("tier", "silver"), ("src", "web")),
        updated_at=ts(2),
        warnings=("invalid_email_dropped",),
    )
    old = mk("o", title="Old Name", email="old@x.com", notes="old notes", updated_at=ts(1))
    contacts, merges, rejects = dedupe([old, new, mid])
    assert rejects == []
    assert merges == [Merge(P1, "n", "m"), Merge(P1, "n", "o")]
    assert contacts == [
        Contact(
            phone=P1,
            title="Middle Name",  # the phone fallback counts as missing
            email="mid@x.com",  # next most recent with an email
            notes="newest notes",
            tags=("VIP", "b", "c"),  # survivor first, case-insensitive union
            group_ids=("g1", "g2"),
            group_keys=("k1", "k2"),
            custom_fields=(("src", "web"), ("tier", "gold")),  # survivor wins per key
            crm_ids=("n", "m", "o"),
            updated_at=ts(3),
            warnings=("invalid_email_dropped",),  # title_from_phone no longer true
        )
    ]


def test_all_titles_fallback_keeps_phone_title_and_warning() -> None:
    a = mk("a", title=P1, warnings=("title_from_phone",), updated_at=ts(2))
    b = mk("b", title=P1, warnings=("title_from_phone",))
    (c,), _, _ = dedupe([a, b])
    assert (c.title, c.warnings) == (P1, ("title_from_phone",))


def test_tag_union_cut_to_twenty() -> None:
    a = mk("a", tags=tuple(f"a{i}" for i in range(15)), updated_at=ts(2))
    b = mk("b", tags=tuple(f"b{i}" for i in range(15)))
    (c,), _, _ = dedupe([b, a])
    assert c.tags == tuple(f"a{i}" for i in range(15)) + tuple(f"b{i}" for i in range(5))
    assert "tags_truncated" in c.warnings


def test_group_union_over_twenty_rejects_every_record() -> None:
    a = mk("a", group_ids=tuple(f"g{i:02}" for i in range(12)))
    b = mk("b", group_ids=tuple(f"g{i:02}" for i in range(6, 21)))
    other = mk("x", P2)
    contacts, merges, rejects = dedupe([a, b, other])
    assert contacts == [other] and merges == []
    assert [(r.crm_id, r.reason, r.phone) for r in rejects] == [
        ("a", "too_many_groups", P1),
        ("b", "too_many_groups", P1),
    ]
    assert "21 ErzyCall groups" in rejects[0].detail


def test_repeated_crm_id_counted_once() -> None:
    (c,), merges, _ = dedupe([mk("a", updated_at=ts(1)), mk("a"), mk("b")])
    assert c.crm_ids == ("a", "b") and merges == [Merge(P1, "a", "b")]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (["c10", "c9", "c2", "c1"], ["c1", "c2", "c9", "c10"]),
        (["10", "9", "a", "1b"], ["1b", "9", "10", "a"]),
        (["x007", "x7", "x07"], ["x007", "x07", "x7"]),  # equal values: raw id decides
        (["", "a"], ["", "a"]),
    ],
)
def test_natural_key(ids: list[str], expected: list[str]) -> None:
    assert sorted(ids, key=natural_key) == expected


def _dedupe_cpu_seconds(n: int) -> float:
    """CPU time of this thread to dedupe n contacts, 30% of them duplicates."""
    contacts = [mk(str(i), f"+1202{i % (n * 7 // 10):07}") for i in range(n)]
    gc.collect()  # no collection of the previous run's garbage inside the measurement
    start = time.thread_time()
    out, merges, rejects = dedupe(contacts)
    elapsed = time.thread_time() - start
    assert (len(out), len(merges), len(rejects)) == (n * 7 // 10, n - n * 7 // 10, 0)
    return elapsed


def test_large_input_is_linear_enough() -> None:
    # Four times the input takes about five times the CPU (n log n sorting); a quadratic step
    # would take sixteen. Thread CPU time, so other work on a loaded machine does not count.
    small, large = _dedupe_cpu_seconds(25_000), _dedupe_cpu_seconds(100_000)
    assert large / small < 10, (small, large)


# --- properties ------------------------------------------------------------------------------

PHONES = [f"+1202555{i:04}" for i in range(6)]
CONTACTS = st.lists(
    st.builds(
        lambda phone, title_fallback, email, tags, groups, day: (
            phone,
            title_fallback,
            email,
            tags,
            groups,
            day,
        ),
        st.sampled_from(PHONES),
        st.booleans(),
        st.none() | st.sampled_from(["a@x.com", "b@x.com"]),
        st.lists(st.sampled_from(["a", "A", "b", "c"] + [f"t{i}" for i in range(25)]), max_size=20),
        st.lists(st.sampled_from([f"g{i}" for i in range(30)]), max_size=12, unique=True),
        st.none() | st.integers(1, 5),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(CONTACTS)
def test_dedupe_properties(specs: list[tuple[Any, ...]]) -> None:
    inputs = []
    for i, (phone, fallback, email, tags, groups, day) in enumerate(specs):
        inputs.append(
            mk(
                f"c{i}",
                phone,
                title=phone if fallback else f"Name {i}",
                warnings=("title_from_phone",) if fallback else (),
                email=email,
                tags=tuple({t.casefold(): t for t in reversed(tags)}.values())[::-1],
                group_ids=tuple(sorted(groups)),
                updated_at=ts(day) if day else None,
            )
        )
    contacts, merges, rejects = dedupe(inputs)

    phones = [c.phone for c in contacts]
    assert phones == sorted(set(phones))  # one contact per phone, sorted
    outcomes = Counter(
        [c.crm_ids[0] for c in contacts]
        + [m.merged_crm_id for m in merges]
        + [r.crm_id for r in rejects]
    )
    assert outcomes == Counter(c.crm_ids[0] for c in inputs)  # each id exactly once
    assert all(isinstance(r, Reject) and r.reason == "too_many_groups" for r in rejects)
    for c in contacts:
        sources = [i for i in inputs if i.phone == c.phone]
        assert set(c.crm_ids) == {s.crm_ids[0] for s in sources}
        assert c.crm_ids[1:] == tuple(m.merged_crm_id for m in merges if m.phone == c.phone)
        assert set(c.group_ids) == {g for s in sources for g in s.group_ids}
        assert len(c.group_ids) <= 20 and len(c.tags) <= 20
        assert len({t.casefold() for t in c.tags}) == len(c.tags)
        if any(s.email for s in sources):
            assert c.email is not None
        if any("title_from_phone" not in s.warnings for s in sources):
            assert c.title != c.phone
