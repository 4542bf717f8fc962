"""The state database: what the sync last confirmed in ErzyCall, per account and phone.

``StateStore`` is the one object the engine talks to; it is made of one part per concern
(contacts, leases, outcomes, audit, runs). The tables are in ``schema``, the portable write
helpers in ``database``, migrations of older layouts in ``migrations``; the record cache and
the shared rate budget live beside them in modules of their own.
"""

from erzy_pipelines.state.base import LeaseLost
from erzy_pipelines.state.schema import (
    AUDIT_FIELDS,
    DEFAULT_ACCOUNT,
    LEGACY_ACCOUNT,
    RUN_COUNT_FIELDS,
)
from erzy_pipelines.state.store import StateStore

__all__ = [
    "AUDIT_FIELDS",
    "DEFAULT_ACCOUNT",
    "LEGACY_ACCOUNT",
    "RUN_COUNT_FIELDS",
    "LeaseLost",
    "StateStore",
]
