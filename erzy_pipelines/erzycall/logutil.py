"""Logging helpers: phone numbers are masked before they reach a log line."""

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


class PhoneMaskFilter(logging.Filter):
    """Masks phone numbers in a record's final message (httpx logs full URLs at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_phones(message)
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
