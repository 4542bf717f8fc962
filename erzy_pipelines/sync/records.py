"""What the incremental read of the CRM hands on: the run's records, and what was made of them.

Apart from ``prepare.py`` (which makes them) because the run, the planning step and the Dagster
assets all pass them around without needing how they are made. A :class:`Record` is kept small
on purpose: a run holds one per CRM record, a million of them included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from erzy_pipelines.core.dedupe import Merge
from erzy_pipelines.core.normalize import Contact, Reject


@dataclass(slots=True)
class Record:
    """One CRM record as a run holds it: small, so a million of them fit."""

    crm_id: str | None
    group_keys: tuple[str, ...]
    fingerprint: int
    phone: str | None = None  # E.164 when accepted; None when rejected (or not yet known)
    result: Any = None  # this run's normalization of it, until the contacts are made


@dataclass
class Extracted:
    """The CRM records one run covers (its groups' records and those sharing their phones)."""

    records: list[Record]
    columns: list[str]
    preview: list[dict[str, Any]] = field(default_factory=list)  # a few rows per group
    stranded: int = 0  # records included because they were last sent with a selected group
    same_phone: int = 0  # records of other groups sharing a phone with a selected record
    managed_groups: frozenset[str] = frozenset()  # every ErzyCall group id the mapping uses
    normalized: int = 0  # records normalized this run (the others were unchanged)
    vanished: int = 0  # records gone from the CRM since the last run
    read_started: datetime | None = None  # when the run began reading the CRM (UTC)


@dataclass
class Prepared:
    """What normalization and dedupe made of the run's records."""

    rejects: list[Reject]
    contacts: list[Contact]  # contacts to plan: one per phone whose records or state moved
    merges: list[Merge]
    dedupe_rejects: list[Reject] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)  # phones needing no work (any order)
    # phone → the fingerprint of its records, for the contacts to plan (stored with each
    # confirmed write, which makes the contact settled for the next run)
    fingerprints: dict[str, int] = field(default_factory=dict)
    accepted: int = 0  # records normalization accepted

    @property
    def all_rejects(self) -> list[Reject]:
        return self.rejects + self.dedupe_rejects

    @property
    def contact_count(self) -> int:
        return len(self.contacts) + len(self.settled)

    def sync_inputs(self) -> dict[str, Any]:
        """What ``sync.run.execute_run`` takes from the run's records, by keyword."""
        return {
            "contacts": self.contacts,
            "rejects": self.all_rejects,
            "merges": self.merges,
            "settled": self.settled,
            "fingerprints": self.fingerprints,
        }

    def parts(self) -> dict[str, Any]:
        """The lists by name, as ``core.group_figures.group_figures`` takes them."""
        return {
            "rejects": self.rejects,
            "contacts": [c.phone for c in self.contacts] + self.settled,
            "merges": self.merges,
            "dedupe_rejects": self.dedupe_rejects,
        }
