"""A wrapper that keeps the API key out of reprs, logs and exception text."""

from __future__ import annotations

import hmac

from erzy_pipelines.core.key_id import key_id

_KNOWN_PREFIXES = ("ek_live_", "ek_test_")


class Secret:
    """Holds a secret string; only :meth:`reveal` hands the value out.

    ``repr``/``str`` show at most the public key prefix (``ek_test_…(redacted)``) so a key can be
    told apart from another environment's key without ever being printed.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str) or not value.strip():
            raise ValueError("API key must be a non-empty string")
        if any(ch.isspace() for ch in value) or not value.isprintable():
            # Whitespace or control characters would corrupt (or inject) the header.
            raise ValueError("API key contains whitespace or control characters")
        self._value = value

    def reveal(self) -> str:
        """The raw value, for the one place that must send it (the request header)."""
        return self._value

    @property
    def prefix(self) -> str:
        """The non-secret key prefix (e.g. ``ek_test_``) or an empty string."""
        return next((p for p in _KNOWN_PREFIXES if self._value.startswith(p)), "")

    def fingerprint(self) -> str:
        """A short stable hash, safe to log, to tell keys apart (``core.key_id``)."""
        return key_id(self._value)

    def __repr__(self) -> str:
        return f"{self.prefix}…(redacted)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self.fingerprint()))
