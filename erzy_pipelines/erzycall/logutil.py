"""Logging helpers: phone numbers and email addresses are masked before they reach a log line.

Full values belong in the audit table (which the user owns), never in logs, exception text shown
in the Dagster UI, or asset metadata previews.
"""

from __future__ import annotations

import logging
import re

# E.164-ish runs of digits not glued to a word (so ids like contact_1234567 stay intact).
_PHONE = re.compile(r"(?<![\w+%])(?:\+|%2B)?\d{7,15}(?!\d)", re.IGNORECASE)


def mask_phone(phone: str) -> str:
    """``+14155551234`` -> ``+1415*****34``: enough to correlate, not enough to dial."""
    plus = "+" if phone.startswith("+") else ""
    digits = phone[len(plus):]
    if phone.upper().startswith("%2B"):
        plus, digits = "+", phone[3:]
    keep_head = 4 if len(digits) > 8 else 2
    hidden = len(digits) - keep_head - 2
    return f"{plus}{digits[:keep_head]}{'*' * hidden}{digits[-2:]}"


def mask_phones(text: str) -> str:
    """Mask every phone-number-looking run of digits in ``text``."""
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


# Deliberately loose: anything shaped like local@domain.tld, including non-ASCII local parts.
_EMAIL = re.compile(r"[^\s@<>()\[\]\\,;:\"']+@[^\s@<>()\[\]\\,;:\"']+\.[^\s@<>()\[\]\\,;:\"']+")


def mask_email(email: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com``: the domain stays, the person does not."""
    local, at, domain = email.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_emails(text: str) -> str:
    """Mask every email-address-looking substring of ``text``."""
    return _EMAIL.sub(lambda m: mask_email(m.group(0)), text)


def mask_pii(text: str) -> str:
    """Mask email addresses, then phone numbers, in free text (log messages, error text)."""
    return mask_phones(mask_emails(text))


# Free text writes numbers with separators ("+1 (415) 555-1001"); log lines do not, and dates
# in them must survive, so only free text (previews of titles and notes) uses this pattern.
_LOOSE_PHONE = re.compile(r"(?<![\w+%])(?:\+|%2B)?\(?\d(?:[\s().\-/]{0,3}\d){6,16}(?!\d)")


def mask_text(text: str) -> str:
    """Mask emails and phone numbers however they are written, in user-typed free text."""
    return _LOOSE_PHONE.sub(lambda m: mask_phone_text(m.group(0)), mask_emails(text))


def mask_phone_text(text: str) -> str:
    """A phone as typed, masked: E.164 like :func:`mask_phone`; otherwise every digit but the
    last two is hidden (``(415) 555-1001`` -> ``(***) ***-**01``), whatever the format."""
    compact = text.strip()
    if re.fullmatch(r"\+?\d{7,15}", compact):
        return mask_phone(compact)
    digits = sum(ch.isdigit() for ch in text)
    seen = 0
    out = []
    for ch in text:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen > digits - 2 else "*")
        else:
            out.append(ch)
    return mask_emails("".join(out))


class PhoneMaskFilter(logging.Filter):
    """Masks phone numbers and emails in a record's final message (httpx logs full URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_pii(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def install_phone_filter(logger_name: str = "httpx") -> None:
    """Attach one PhoneMaskFilter to ``logger_name`` (idempotent).

    httpx's request log line carries the query string, where a phone lookup puts the phone.
    """
    target = logging.getLogger(logger_name)
    if not any(isinstance(f, PhoneMaskFilter) for f in target.filters):
        target.addFilter(PhoneMaskFilter())
