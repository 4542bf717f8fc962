"""Turn one CRM row into a contact the ErzyCall API will accept, or a reject with a reason.

Every row ends as exactly one ``Contact`` or one ``Reject``; ``normalize_row`` never raises
(an unexpected value becomes ``Reject(reason="invalid_row")`` with the cause in ``detail``).
``Contact.warnings`` lists, as machine-readable codes, every change made to the data.

Rules:

- crm_id: text, trimmed; missing/blank -> reject ``missing_crm_id``.
- phone: parsed with phonenumbers using the row's ``country`` (ISO 3166 alpha-2, any case, "UK"
  read as "GB") or else ``default_region``. "+" and "00" international prefixes are accepted
  (then the region does not matter); a leading "tel:" is ignored. Output is E.164.
  Rejects: ``missing_phone`` (empty), ``unparseable_phone`` (not a number, letters in it, unknown
  country for a national-format number, > 250 chars), ``invalid_phone`` (parsed but
  ``is_valid_number`` is false). Letters are refused rather than read as a vanity number because
  a mistyped O or I would silently become a different, valid number: the wrong person is called.
- extension: E.164 cannot carry one; the number is kept and the extension is stored in
  ``customFields["phone_extension"]`` (overriding a ``custom_phone_extension`` column), warning
  ``extension_moved_to_custom_field``.
- title: invisible characters removed (see ``core.text``), NFC, whitespace collapsed, trimmed;
  empty -> the E.164 phone (``title_from_phone``); over 200 -> cut at a grapheme-safe boundary
  (``title_truncated``).
- email: invisible characters removed, NFC, trimmed, domain lower-cased; must be <= 254 chars,
  one "@", no whitespace, a dot inside the domain and no empty domain label; else dropped
  (``invalid_email_dropped``) and the contact is still sent. Empty -> None.
- notes: invisible characters except newline and tab removed, CRLF/CR -> LF, NFC, trimmed; over
  5,000 -> cut (``notes_truncated``); empty -> None.
- tags: comma-separated text (a list is accepted too); each cleaned like a title; empties dropped;
  over 50 -> cut (``tag_truncated``); de-duplicated case-insensitively (casefold) keeping the
  first spelling, in order; more than 20 -> the first 20 (``tags_truncated``).
- group_ids: ErzyCall group ids of the row's memberships (list, or comma-separated text); blanks
  ignored; sorted, unique; more than 20 -> reject ``too_many_groups``: the API holds 20, and a
  partial set would break "groupIds = all mapped CRM groups". group_keys: sorted, unique.
- custom_<name> columns -> customFields[name] as text (see ``core.text.to_custom_value``);
  None/empty dropped; sorted by name.
- updated_at: datetime / ISO string / Unix seconds -> UTC ISO 8601 string; unparseable -> None.
- Lengths are counted in UTF-16 code units (see ``core.text``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from erzy_pipelines.core import text as tx

TITLE_MAX = 200
NOTES_MAX = 5000
TAG_MAX = 50
TAGS_MAX = 20
GROUPS_MAX = 20
EMAIL_MAX = 254
PHONE_INPUT_MAX = 250  # phonenumbers refuses longer input
RAW_PHONE_KEEP = 100  # a reject keeps at most this much of the raw phone (audit rows stay small)
DETAIL_MAX = 500
EXTENSION_FIELD = "phone_extension"
CUSTOM_PREFIX = "custom_"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+$")
_REGION_ALIASES = {"UK": "GB"}
_EXTENSION_TAIL = re.compile(r"\d+\D*$")
_TRAILING_NON_DIGITS = re.compile(r"\D+$")
_LETTER = re.compile(r"[^\W\d_]")
_REASON_TEXT = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country calling code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong length",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "local number without area code",
}


@dataclass(frozen=True, slots=True)
class Contact:
    """A contact ready to send: one per E.164 phone after ``dedupe``."""

    phone: str
    title: str
    email: str | None
    notes: str | None
    tags: tuple[str, ...]
    group_ids: tuple[str, ...]
    group_keys: tuple[str, ...]
    custom_fields: tuple[tuple[str, str], ...]
    crm_ids: tuple[str, ...]
    updated_at: str | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """A CRM record that cannot be sent; ``reason`` is a machine-readable code."""

    crm_id: str | None
    reason: str
    detail: str
    phone: str | None = None


class _RowError(Exception):
    """A rule says no: becomes a Reject with this reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def normalize_region(code: Any) -> str | None:
    """An ISO 3166 alpha-2 region phonenumbers knows, upper-cased, or ``None``."""
    if not isinstance(code, str):
        return None
    region = code.strip().upper()
    region = _REGION_ALIASES.get(region, region)
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


def normalize_rows(
    rows: Iterable[Mapping[str, Any]], default_region: str = "US"
) -> tuple[list[Contact], list[Reject]]:
    """Normalize many rows; every row lands in exactly one of the two lists, in input order."""
    contacts: list[Contact] = []
    rejects: list[Reject] = []
    for row in rows:
        result = normalize_row(row, default_region)
        (contacts if isinstance(result, Contact) else rejects).append(result)
    return contacts, rejects


def normalize_row(row: Mapping[str, Any], default_region: str = "US") -> Contact | Reject:
    """One row -> ``Contact`` or ``Reject``. Never raises."""
    crm_id: str | None = None
    phone_text: str | None = None
    with contextlib.suppress(Exception):  # first, so every reject can show its phone
        phone_text = _phone_text(row.get("phone"))  # a bad type is raised again below
    try:
        crm_id = _crm_id(row.get("crm_id"))
        if phone_text is None:
            _phone_text(row.get("phone"))  # a bad type raises here, as invalid_row
        return _normalize(row, crm_id, phone_text, default_region)
    except _RowError as exc:
        return Reject(crm_id, exc.reason, exc.detail, _kept(phone_text))
    except Exception as exc:  # noqa: BLE001 - the contract: a bad row never stops a run
        return Reject(crm_id, "invalid_row", _describe(exc), _kept(phone_text))


def _describe(exc: Exception) -> str:
    try:
        detail = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - an exception whose str() fails
        detail = type(exc).__name__
    return detail[:DETAIL_MAX]


def _crm_id(value: Any) -> str:
    text = tx.to_text(value, "crm_id")
    crm_id = tx.clean_line(text) if text is not None else ""
    if not crm_id:
        raise _RowError("missing_crm_id", "crm_id is missing or blank")
    return crm_id


def _phone_text(value: Any) -> str | None:
    """The phone as text with invisible characters removed (pasted numbers often carry some)."""
    text = tx.to_text(value, "phone")
    return tx.clean_line(text) if text else None


def _kept(phone_text: str | None) -> str | None:
    """The raw phone kept on a reject, capped so audit rows stay small."""
    return phone_text[:RAW_PHONE_KEEP] if phone_text else None


def _normalize(
    row: Mapping[str, Any], crm_id: str, phone_text: str | None, default_region: str
) -> Contact:
    warnings: list[str] = []
    phone, extension = parse_phone(phone_text, row.get("country"), default_region)

    group_ids = _id_list(row.get("group_ids"), "group_ids")
    if len(group_ids) > GROUPS_MAX:
        raise _RowError(
            "too_many_groups",
            f"member of {len(group_ids)} ErzyCall groups; the API holds at most {GROUPS_MAX}",
        )
    group_keys = _id_list(row.get("group_keys"), "group_keys")

    custom = _custom_fields(row)
    if extension:
        custom[EXTENSION_FIELD] = extension
        warnings.append("extension_moved_to_custom_field")

    title = _title(row.get("title"), phone, warnings)
    email = _email(row.get("email"), warnings)
    notes = _notes(row.get("notes"), warnings)
    tags = _tags(row.get("tags"), warnings)

    return Contact(
        phone=phone,
        title=title,
        email=email,
        notes=notes,
        tags=tags,
        group_ids=group_ids,
        group_keys=group_keys,
        custom_fields=tuple(sorted(custom.items())),
        crm_ids=(crm_id,),
        updated_at=tx.to_utc_iso(row.get("updated_at")),
        warnings=tuple(warnings),
    )


def parse_phone(raw: str | None, country: Any, default_region: str) -> tuple[str, str | None]:
    """Raw phone text -> (E.164, extension or None); raises ``_RowError`` with the reason."""
    if raw is None or not raw.strip():
        raise _RowError("missing_phone", "phone is empty")
    text = raw.strip()
    if len(text) > PHONE_INPUT_MAX:
        raise _RowError("unparseable_phone", f"longer than {PHONE_INPUT_MAX} characters")
    if text[:4].lower() == "tel:":
        text = text[4:].strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    international = text.startswith(("+", "\uff0b"))

    if country is not None and not (isinstance(country, str) and not country.strip()):
        region, problem = normalize_region(country), f"unknown country {str(country)[:40]!r}"
    else:
        region, problem = normalize_region(default_region), f"unknown region {default_region!r}"
    if region is None and not international:
        raise _RowError("unparseable_phone", f"national-format number but {problem}")
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        message = getattr(exc, "_msg", None) or str(exc)
        raise _RowError("unparseable_phone", f"not a phone number ({message})") from None

    extension = number.extension or None
    main = text
    if extension:
        main = _TRAILING_NON_DIGITS.sub("", _EXTENSION_TAIL.sub("", text))
    if _LETTER.search(main):
        raise _RowError("unparseable_phone", "contains letters (vanity numbers are not converted)")

    if not phonenumbers.is_valid_number(number):
        reason = _REASON_TEXT.get(phonenumbers.is_possible_number_with_reason(number))
        where = phonenumbers.region_code_for_number(number) or f"+{number.country_code}"
        raise _RowError(
            "invalid_phone", f"not a valid number for {where}" + (f" ({reason})" if reason else "")
        )
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not E164.match(e164):  # belt and braces: the API's own pattern
        raise _RowError("invalid_phone", "does not format as E.164")
    return e164, extension


def _title(value: Any, phone: str, warnings: list[str]) -> str:
    text = tx.to_text(value, "title")
    title = tx.clean_line(text) if text else ""
    if not title:
        warnings.append("title_from_phone")
        return phone
    title, cut = tx.truncate(title, TITLE_MAX)
    if cut:
        warnings.append("title_truncated")
    return title


def _email(value: Any, warnings: list[str]) -> str | None:
    text = tx.to_text(value, "email")
    email = tx.clean_all(text) if text else ""
    if not email:
        return None
    if len(email) <= EMAIL_MAX and _EMAIL.match(email):
        local, domain = email.rsplit("@", 1)
        email = f"{local}@{domain.lower()}"
        if len(email) <= EMAIL_MAX:  # lower() may lengthen a few characters
            return email
    warnings.append("invalid_email_dropped")
    return None


def _notes(value: Any, warnings: list[str]) -> str | None:
    text = tx.to_text(value, "notes")
    notes = tx.clean_block(text) if text else ""
    if not notes:
        return None
    notes, cut = tx.truncate(notes, NOTES_MAX)
    if cut:
        warnings.append("notes_truncated")
    return notes


def _tags(value: Any, warnings: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        pieces: list[str] = []
        for item in value:
            text = tx.to_text(item, "tags")
            if text:
                pieces.extend(text.split(","))
    else:
        text = tx.to_text(value, "tags")
        pieces = text.split(",") if text else []
    tags, cut_one, cut_many = pick_tags(pieces)
    if cut_one:
        warnings.append("tag_truncated")
    if cut_many:
        warnings.append("tags_truncated")
    return tags


def pick_tags(pieces: Iterable[str], clean: bool = True) -> tuple[tuple[str, ...], bool, bool]:
    """Tags in order, cleaned, cut to 50, unique by casefold, at most 20.

    Returns (tags, some tag was cut, the list was cut). Stops at the 21st distinct tag, so a
    huge tag string costs little.
    """
    tags: list[str] = []
    seen_raw: set[str] = set()
    seen: set[str] = set()
    cut_one = cut_many = False
    for piece in pieces:
        if piece in seen_raw:
            continue
        seen_raw.add(piece)
        tag = tx.clean_line(piece) if clean else piece
        if not tag:
            continue
        tag, cut = tx.truncate(tag, TAG_MAX)
        key = tag.casefold()
        if key in seen:
            continue
        if len(tags) == TAGS_MAX:
            cut_many = True
            break
        cut_one = cut_one or cut
        seen.add(key)
        tags.append(tag)
    return tuple(tags), cut_one, cut_many


def _id_list(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if isinstance(items, bytes | bytearray | Mapping) or not isinstance(items, Iterable):
        raise TypeError(f"{field}: expected a list of ids, got {type(value).__name__}")
    ids = set()
    for item in items:
        text = tx.to_text(item, field)
        if text and (clean := tx.clean_line(text)):
            ids.add(clean)
    return tuple(sorted(ids))


def _custom_fields(row: Mapping[str, Any]) -> dict[str, str]:
    custom: dict[str, str] = {}
    for key, value in row.items():
        if isinstance(key, str) and key.startswith(CUSTOM_PREFIX) and len(key) > len(CUSTOM_PREFIX):
            text = tx.to_custom_value(value)
            if text is not None:
                custom[key[len(CUSTOM_PREFIX) :]] = text
    return custom
