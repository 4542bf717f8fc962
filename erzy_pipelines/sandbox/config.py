"""Sandbox configuration: keys, limits, preloaded groups and the demo defaults.

The demo key is deliberately public (it only ever opens the local sandbox), so ``serve_forever``
may print it; every other key is treated as a secret and only ever logged as a hash.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from erzy_pipelines.demo import DEMO_API_KEY, DEMO_GROUPS

#: The documented production limits: 60 requests per minute and 1,000 per hour, per key.
DEFAULT_LIMITS: tuple[tuple[int, float], ...] = ((60, 60.0), (1000, 3600.0))

SCOPES = ("contacts:read", "contacts:write", "contact_groups:read", "*")


@dataclass
class KeySpec:
    """One API key's grants and state. ``expires_at`` is a Unix time; ``None`` never expires."""

    scopes: tuple[str, ...] = ("*",)
    expired: bool = False
    revoked: bool = False
    expires_at: float | None = None

    def is_expired(self, now: float | None = None) -> bool:
        if self.expired:
            return True
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    def allows(self, scope: str) -> bool:
        return "*" in self.scopes or scope in self.scopes


def _demo_keys() -> dict[str, KeySpec]:
    return {DEMO_API_KEY: KeySpec(scopes=("*",))}


@dataclass
class SandboxConfig:
    """Everything a sandbox instance needs. ``port=0`` picks a free port."""

    host: str = "127.0.0.1"
    port: int = 0
    limits: tuple[tuple[int, float], ...] = DEFAULT_LIMITS
    keys: dict[str, KeySpec] = field(default_factory=_demo_keys)
    groups: tuple[tuple[str, str], ...] = DEMO_GROUPS
    db_path: str | None = None
    idempotency_ttl: float = 24 * 3600.0
    seed: int = 0
    log_requests: bool = False


def key_hash(key: str | None) -> str | None:
    """A stable, non-reversible tag for a key: what logs and records carry instead of the key."""
    if not key:
        return None
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def parse_limits(text: str) -> tuple[tuple[int, float], ...]:
    """Parse the CLI form ``"60/60,1000/3600"`` (requests/seconds, comma separated)."""
    windows: list[tuple[int, float]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            count, seconds = part.split("/", 1)
            window = (int(count), float(seconds))
        except ValueError:
            raise ValueError(f"bad limit {part!r}: expected REQUESTS/SECONDS, e.g. 60/60") from None
        if window[0] < 1 or window[1] <= 0:
            raise ValueError(f"bad limit {part!r}: requests and seconds must be positive")
        windows.append(window)
    if not windows:
        raise ValueError("no limits given")
    return tuple(windows)
