from __future__ import annotations

import datetime as dt
import random
import time
from decimal import Decimal

import pytest

from erzy_pipelines.core import text as tx

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # man ZWJ woman ZWJ girl
RAINBOW = "\U0001f3f3\ufe0f\u200d\U0001f308"  # white flag VS16 ZWJ rainbow
PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # ZWNJ between letters


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  John   Smith ", "John Smith"),
        ("John\tSmith\r\nJr", "John Smith Jr"),
        ("Jo\u200bhn", "John"),  # zero-width space
        ("\ufeffAnna\u00ad", "Anna"),  # BOM, soft hyphen
        ("\u202eevil\u202c", "evil"),  # bidi override
        ("a\x00b\x07c\x7fd\x9fe", "abcde"),
        ("Cafe\u0301", "Caf\u00e9"),  # NFC
        ("Caf\u200be\u0301", "Caf\u00e9"),  # removal first lets NFC compose
        (FAMILY, FAMILY),
        (RAINBOW, RAINBOW),
        (PERSIAN, PERSIAN),
        ("a \u200d b", "a b"),  # stray joiner between spaces
        ("\u200dstart", "start"),
        ("x\ud800y", "xy"),  # lone surrogate
        ("\u05e9\u05dc\u05d5\u05dd \u200fabc", "\u05e9\u05dc\u05d5\u05dd abc"),  # RLM dropped
        ("a\u2028b\u3000c", "a b c"),  # line separator, ideographic space
    ],
)
def test_clean_line(raw: str, expected: str) -> None:
    assert tx.clean_line(raw) == expected


def test_clean_block_keeps_newlines_and_tabs() -> None:
    raw = "  line1\r\nline2\rline3\n\tx\x00y\u200b  "
    assert tx.clean_block(raw) == "line1\nline2\nline3\n\txy"


def test_clean_all_drops_joiners_too() -> None:
    assert tx.clean_all(" a\u200db\u200c@x.com ") == "ab@x.com"


def test_many_joiners_are_all_dropped_quickly() -> None:
    # ~6 ms in one pass; even a C-speed copy of the string per joiner (quadratic) moves 1.6 GB,
    # a good fraction of a second. Thread CPU time, so a loaded machine does not make it fail.
    s = ("a\u200d" * 20_000) + "b"
    start = time.thread_time()
    cleaned = tx.clean_line(s)
    elapsed = time.thread_time() - start
    assert cleaned == "a" * 20_000 + "b"
    assert elapsed < 0.1, elapsed


@pytest.mark.parametrize(
    ("s", "limit", "expected", "cut"),
    [
        ("abc", 3, "abc", False),
        ("abcd", 3, "abc", True),
        ("ab cd", 3, "ab", True),  # trailing space trimmed
        ("\U0001f600" * 3, 4, "\U0001f600" * 2, True),  # astral = 2 UTF-16 units
        ("\U0001f600" * 2, 4, "\U0001f600" * 2, False),
        ("abe\u0301f", 3, "ab", True),  # no stranded combining mark
        ("ab" + FAMILY, 5, "ab", True),  # no half ZWJ sequence
        ("ab\U0001f44d\U0001f3fd", 4, "ab", True),  # skin-tone modifier stays with its emoji
        ("a\U0001f1e9\U0001f1ea\U0001f1eb\U0001f1f7", 6, "a\U0001f1e9\U0001f1ea", True),  # flags
        ("a" + "\u0301" * 100, 10, "a" + "\u0301" * 9, True),  # bounded back-off: hard cut
    ],
)
def test_truncate(s: str, limit: int, expected: str, cut: bool) -> None:
    out, was_cut = tx.truncate(s, limit)
    assert (out, was_cut) == (expected, cut)
    assert tx.utf16_len(out) <= limit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("x", "x"),
        (b"caf\xc3\xa9", "caf\u00e9"),
        (b"\xff", "\ufffd"),
        (42, "42"),
        (12025550123.0, "12025550123"),
        (1.5, "1.5"),
        (Decimal("7"), "7"),
    ],
)
def test_to_text(value: object, expected: str | None) -> None:
    assert tx.to_text(value, "f") == expected


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), [1], {"a": 1}, object()])
def test_to_text_refuses_non_scalars(value: object) -> None:
    with pytest.raises(TypeError, match="^f: expected text"):
        tx.to_text(value, "f")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05.000000+00:00"),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-01-02T01:04:05.000000+00:00",
        ),
        (dt.date(2024, 1, 2), "2024-01-02T00:00:00.000000+00:00"),
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05.000000+00:00"),
        ("2024-01-02 03:04:05.5", "2024-01-02T03:04:05.500000+00:00"),
        (b"2024-01-02", "2024-01-02T00:00:00.000000+00:00"),
        (0, "1970-01-01T00:00:00.000000+00:00"),
        ("yesterday", None),
        ("", None),
        (True, None),
        ([2024], None),
        (dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))), None),  # overflow
        (10**20, None),
    ],
)
def test_to_utc_iso(value: object, expected: str | None) -> None:
    assert tx.to_utc_iso(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("  ", None),
        (" gold ", "gold"),
        (True, "true"),
        (3, "3"),
        (2.5, "2.5"),
        (dt.date(2024, 5, 1), "2024-05-01"),
        (dt.datetime(2024, 5, 1, 8, 30), "2024-05-01T08:30:00"),
        ({"b": 1, "a": "é"}, '{"a": "é", "b": 1}'),
        (b"raw", "raw"),
        ("a\x00b\nc", "ab\nc"),
    ],
)
def test_to_custom_value(value: object, expected: str | None) -> None:
    assert tx.to_custom_value(value) == expected


def test_a_naive_datetime_reads_as_the_same_moment_in_utc() -> None:
    """The fast path for naive datetimes (most CRMs' timestamps) gives what the general path
    gives the same moment marked as UTC, from year 1 to 9999."""
    rng = random.Random(5)
    lo = dt.datetime(1, 1, 2, tzinfo=dt.UTC).timestamp()
    hi = dt.datetime(9999, 12, 30, tzinfo=dt.UTC).timestamp()
    moments = [dt.datetime.min, dt.datetime.max, dt.datetime(2026, 12, 2, 10, 0, 0, 1)]
    moments += [
        dt.datetime.fromtimestamp(rng.uniform(lo, hi), dt.UTC).replace(tzinfo=None)
        for _ in range(2000)
    ]
    for naive in moments:
        assert tx.to_utc_iso(naive) == tx.to_utc_iso(naive.replace(tzinfo=dt.UTC)), naive
