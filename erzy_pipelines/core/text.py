"""Text helpers shared by the normalizers: value coercion, cleaning and safe truncation.

Rules (used by ``normalize``):

- Invisible characters: Unicode control (Cc), format (Cf) and lone surrogate (Cs) characters are
  removed, because they are invisible in the ErzyCall UI, break string equality (so they would
  defeat de-duplication) and lone surrogates cannot be encoded as UTF-8 at all. Two format
  characters carry meaning and are kept where they do: ZERO WIDTH JOINER inside an emoji sequence
  (e.g. family or rainbow-flag emoji) and ZWJ/ZWNJ between letters or marks (Persian, Indic
  scripts). A string with more than ``_MAX_JOINERS`` joiners loses them all (pathological input;
  keeps the per-character check bounded).
- Unicode NFC after removal, so "e" + COMBINING ACUTE and "é" compare equal.
- Lengths are counted in UTF-16 code units, the stricter of the two ways a server may count
  characters (JavaScript counts units, Python counts code points): a value that fits in units
  fits either way.
- Truncation never splits a surrogate pair and backs off (a bounded number of characters) so it
  does not strand a combining mark, variation selector, skin-tone modifier, ZWJ sequence or half
  of a flag.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import unicodedata
from decimal import Decimal
from typing import Any

ZWNJ = "\u200c"
ZWJ = "\u200d"
_MAX_JOINERS = 10_000
_MAX_BACKOFF = 32


def _format_chars() -> str:
    # Cf only occurs in planes 0, 1 and 14; scanning those (about 25 ms) follows the Unicode
    # version of this Python instead of hard-coding a list.
    chars = []
    for plane in (0, 1, 14):
        for cp in range(plane << 16, (plane + 1) << 16):
            ch = chr(cp)
            if ch not in (ZWJ, ZWNJ) and unicodedata.category(ch) == "Cf":
                chars.append(ch)
    return "".join(chars)


_CF = re.escape(_format_chars())
_CC_ALL = "\x00-\x1f\x7f-\x9f"
_CS = "\ud800-\udfff"
# Titles/tags: controls that are whitespace (\t \n \r \x0b \x0c \x1c-\x1f \x85) are kept here so
# that the whitespace collapse turns them into one space instead of gluing words together.
_LINE_REMOVE = re.compile(f"[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f{_CS}{_CF}]")
_BLOCK_REMOVE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_CS}{_CF}]")  # keeps \t and \n
_ALL_REMOVE = re.compile(f"[{_CC_ALL}{_CS}{_CF}{ZWJ}{ZWNJ}]")
_JOINERS = re.compile(f"[{ZWJ}{ZWNJ}]")
_NEWLINES = re.compile("\r\n?")

_JOINABLE = ("L", "M")  # category prefixes: letters and marks (ZWJ/ZWNJ in scripts)
_EMOJI_BEFORE = ("So", "Sk")  # emoji, skin-tone modifiers
_REGIONAL = range(0x1F1E6, 0x1F200)


def _joiner_kept(s: str, i: int) -> bool:
    if i == 0 or i == len(s) - 1:
        return False
    prev, nxt = s[i - 1], s[i + 1]
    pc, nc = unicodedata.category(prev), unicodedata.category(nxt)
    if s[i] == ZWJ and (pc in _EMOJI_BEFORE or prev == "\ufe0f") and nc == "So":
        return True
    return pc[0] in _JOINABLE and nc[0] in _JOINABLE


def _drop_stray_joiners(s: str) -> str:
    count = s.count(ZWJ) + s.count(ZWNJ)
    if not count:
        return s
    if count > _MAX_JOINERS:
        return _JOINERS.sub("", s)
    return _JOINERS.sub(lambda m: m.group() if _joiner_kept(s, m.start()) else "", s)


def clean_line(s: str) -> str:
    """One-line text (titles, tags, ids): invisible characters out, NFC, whitespace collapsed."""
    if not s.isprintable():  # printable: no Cc/Cf/Cs to remove (the common case, fast)
        s = _drop_stray_joiners(_LINE_REMOVE.sub("", s))
    if not s.isascii():
        s = unicodedata.normalize("NFC", s)
    return " ".join(s.split())


def clean_block(s: str) -> str:
    """Multi-line text (notes): like ``clean_line`` but keeps newlines and tabs; trimmed."""
    if "\r" in s:
        s = _NEWLINES.sub("\n", s)
    if not s.isprintable() and not s.replace("\n", "").replace("\t", "").isprintable():
        s = _drop_stray_joiners(_BLOCK_REMOVE.sub("", s))
    if not s.isascii():
        s = unicodedata.normalize("NFC", s)
    return s.strip()


def clean_all(s: str) -> str:
    """Text where no invisible character can be meant (emails): all of Cc, Cf, Cs removed; NFC."""
    if not s.isprintable():
        s = _ALL_REMOVE.sub("", s)
    if not s.isascii():
        s = unicodedata.normalize("NFC", s)
    return s.strip()


def utf16_len(s: str) -> int:
    """Length in UTF-16 code units (astral characters count 2)."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def _is_extender(ch: str) -> bool:
    """True for characters that belong to the grapheme before them."""
    if ch in (ZWJ, ZWNJ) or "\ufe00" <= ch <= "\ufe0f" or "\U0001f3fb" <= ch <= "\U0001f3ff":
        return True
    return unicodedata.category(ch)[0] == "M"


def truncate(s: str, limit: int) -> tuple[str, bool]:
    """Cut ``s`` to at most ``limit`` UTF-16 units at a grapheme-safe-ish boundary.

    Returns (text, truncated). The back-off is bounded, so a run of thousands of combining marks
    is cut hard rather than emptied.
    """
    if len(s) <= limit // 2 or (len(s) <= limit and utf16_len(s) <= limit):
        return s, False
    n = min(len(s), limit)
    while (excess := utf16_len(s[:n]) - limit) > 0:
        n -= max(1, excess // 2)
    cut = n
    for _ in range(_MAX_BACKOFF):
        if cut <= 1:
            break
        if _is_extender(s[cut]) or s[cut - 1] == ZWJ:
            cut -= 1
        elif ord(s[cut]) in _REGIONAL and ord(s[cut - 1]) in _REGIONAL:
            run = 0
            while run < cut and ord(s[cut - 1 - run]) in _REGIONAL:
                run += 1
            if run % 2:
                cut -= 1
            break
        else:
            break
    else:
        cut = n
    if cut <= 1:
        cut = n
    return s[:cut].rstrip(), True


def to_text(value: Any, field: str) -> str | None:
    """Coerce a scalar database value to text; ``None`` stays ``None``.

    Accepts str, bytes (UTF-8, bad bytes replaced), int, integral float (``12.0`` -> ``"12"``, as
    drivers hand back numeric phone or id columns), Decimal. Anything else (bool, NaN, lists,
    dicts, objects) raises TypeError, which the caller turns into an ``invalid_row`` reject.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        raise TypeError(f"{field}: expected text, got bool")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{field}: expected text, got {value!r}")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"{field}: expected text, got {value!r}")
        return str(value)
    raise TypeError(f"{field}: expected text, got {type(value).__name__}")


def to_custom_value(value: Any) -> str | None:
    """A ``custom_<name>`` value as text: dates ISO 8601, bools ``true``/``false``, JSON for
    dicts/lists, ``str()`` for the rest; cleaned like notes; ``None``/empty -> ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode("utf-8", "replace")
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dt.date | dt.time):
        text = value.isoformat()
    elif isinstance(value, dict | list | tuple):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    else:
        text = str(value)
    return clean_block(text) or None


def to_utc_iso(value: Any) -> str | None:
    """A timestamp as a uniform UTC ISO 8601 string (microsecond precision), or ``None``.

    datetime, date, ISO 8601 strings (``Z`` accepted) and Unix seconds are understood; naive
    values are taken as UTC. The uniform format makes the strings sort chronologically.
    Unparseable or out-of-range values give ``None`` (treated as oldest by dedupe).
    """
    try:
        if type(value) is dt.datetime and value.tzinfo is None:  # what most CRMs give: fast
            return value.isoformat(timespec="microseconds") + "+00:00"
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, dt.datetime):
            moment = value
        elif isinstance(value, dt.date):
            moment = dt.datetime(value.year, value.month, value.day)
        elif isinstance(value, int | float | Decimal):
            moment = dt.datetime.fromtimestamp(float(value), dt.UTC)
        else:
            text = to_text(value, "updated_at")
            if text is None or not (text := text.strip()):
                return None
            moment = dt.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None
