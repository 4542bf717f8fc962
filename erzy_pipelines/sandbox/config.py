"""Sandbox configuration: keys, limits, preloaded groups and the demo defaults.

The demo key is deliberately public (it only ever opens the local sandbox), so ``serve_forever``
may print it; every other key is treated as a secret and only ever logged as a hash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from erzy_pipelines.core.budget import DEFAULT_WINDOWS, RateWindow
from erzy_pipelines.core.key_id import key_id
from erzy_pipelines.demo import DEMO_API_KEY, DEMO_GROUPS

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
    limits: tuple[RateWindow, ...] = DEFAULT_WINDOWS
    keys: dict[str, KeySpec] = field(default_factory=_demo_keys)
    groups: tuple[tuple[str, str], ...] = DEMO_GROUPS
    db_path: str | None = None
    idempotency_ttl: float = 24 * 3600.0
    seed: int = 0
    log_requests: bool = False


def key_hash(key: str | None) -> str | None:
    """A stable, non-reversible tag for a key: what logs and records carry instead of the key."""
    return key_id(key) if key else None
