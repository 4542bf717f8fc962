"""The one name an API key is known by outside the process: a short, non-reversible hash.

The state database files an account's credentials and the key's shared rate budget under it,
and logs tell keys apart by it; the key itself is never stored or written anywhere.
"""

from __future__ import annotations

import hashlib


def key_id(api_key: str) -> str:
    """16 hex characters of the key's SHA-256 (64 bits: no two keys of one user collide)."""
    if not isinstance(api_key, str) or not api_key:
        raise ValueError("an API key must be a non-empty string")
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]
