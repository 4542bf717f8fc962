"""The sample CRM's rows, made one batch at a time so seeding a million people keeps memory flat.

Companies first, then people with their phone numbers and group memberships. The mess is
deliberate: missing and invalid numbers, second numbers, people in several groups and in none,
and the same person entered twice (same number typed differently, another timestamp, sometimes
other tags and groups). All randomness comes from one ``SampleValues``, in a fixed order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

# The ErzyCall contact groups (id, name) the sandbox preloads; the CRM groups below map onto them.
from erzy_pipelines.demo import DEMO_GROUPS

from .sample_values import SampleValues

INTERNAL_GROUP_KEY = "internal-staff"

# (group_key, CRM display name, ErzyCall group id or None = never sent, membership weight)
CRM_GROUPS: tuple[tuple[str, str, str | None, int], ...] = (
    ("vip", "VIP customers", DEMO_GROUPS[0][0], 12),
    ("newsletter", "Newsletter subscribers", DEMO_GROUPS[1][0], 45),
    ("churn-risk", "Churn risk", DEMO_GROUPS[2][0], 10),
    ("trial", "Trial users", DEMO_GROUPS[3][0], 20),
    ("enterprise", "Enterprise accounts", DEMO_GROUPS[4][0], 12),
    ("partners", "Partners", DEMO_GROUPS[5][0], 6),
    ("events-2026", "Events 2026 attendees", DEMO_GROUPS[6][0], 15),
    (INTERNAL_GROUP_KEY, "Internal staff", None, 0),
)

BATCH_SIZE = 10_000


@dataclass
class Batch:
    """Rows for one round of inserts."""

    people: list[dict[str, Any]] = field(default_factory=list)
    phones: list[dict[str, Any]] = field(default_factory=list)
    memberships: list[dict[str, Any]] = field(default_factory=list)


def company_rows(gen: SampleValues, count: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for cid in range(1, count + 1):
        country = gen.country()
        name = gen.company_name(country)
        batch.append({"id": cid, "name": name, "country": country})
        if len(batch) >= BATCH_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class _GroupPool:
    """The groups a person can be drawn into: the sendable ones by weight, plus internal staff."""

    ids: list[int]
    weights: list[int]
    internal_id: int

    @classmethod
    def from_rows(cls, group_rows: list[dict[str, Any]]) -> _GroupPool:
        sendable = [g for g in group_rows if g["erzycall_group_id"] is not None]
        weight_of = {key: w for (key, _, _, w) in CRM_GROUPS}
        return cls(
            ids=[g["id"] for g in sendable],
            weights=[weight_of[g["group_key"]] for g in sendable],
            internal_id=next(g["id"] for g in group_rows if g["group_key"] == INTERNAL_GROUP_KEY),
        )

    def draw(self, gen: SampleValues) -> list[int]:
        return gen.groups(self.ids, self.weights, self.internal_id)


@dataclass(frozen=True)
class _Person:
    """What a duplicate entry of a person copies from the original."""

    row: dict[str, Any]
    country: str | None
    phone_country: str
    nsn: list[str] | None  # the primary number's digit groups; None when it is missing/invalid
    member_of: list[int]


class _Rows:
    """The batch being filled, and the phone ids, which run on across batches."""

    def __init__(self) -> None:
        self.batch = Batch()
        self._phone_id = 0

    def add_phone(self, person_id: int, number: str, kind: str, primary: bool) -> None:
        self._phone_id += 1
        self.batch.phones.append({"id": self._phone_id, "person_id": person_id, "number": number,
                                  "kind": kind, "is_primary": 1 if primary else 0})

    def add_memberships(self, person_id: int, group_ids: list[int]) -> None:
        for gid in group_ids:
            self.batch.memberships.append({"person_id": person_id, "group_id": gid})

    def take(self) -> Batch:
        batch, self.batch = self.batch, Batch()
        return batch


def _add_person(gen: SampleValues, out: _Rows, pid: int, n_companies: int,
                pool: _GroupPool) -> _Person:
    r = gen.r
    home = gen.country()
    country: str | None = home if r.random() >= 0.1 else None
    phone_country = home if r.random() >= 0.08 else gen.any_country()
    display, first, last = gen.name(home)
    company_id = r.randrange(1, n_companies + 1) if r.random() < 0.65 else None
    person = {
        "id": pid, "display_name": display, "first_name": first, "last_name": last,
        "company_id": company_id, "email": gen.email(first, last, pid),
        "notes": gen.notes(), "tags": gen.tags(), "country": country,
        "updated_at": gen.updated_at(),
    }
    out.batch.people.append(person)

    groups_nsn: list[str] | None = None
    roll = r.random()
    if roll < 0.01:
        pass  # nobody wrote a number down
    elif roll < 0.04:
        out.add_phone(pid, gen.invalid_phone(), gen.phone_kind(), True)
    else:
        groups_nsn = gen.nsn_groups(phone_country)
        number = gen.format_phone(phone_country, groups_nsn, country)
        if r.random() < 0.03:
            number += gen.extension()
        out.add_phone(pid, number, r.choice(("mobile", "mobile", "work", "home")), True)
    if r.random() < 0.25:
        other = gen.nsn_groups(home)
        out.add_phone(pid, gen.format_phone(home, other, country), gen.phone_kind(), False)
    member_of = pool.draw(gen)
    out.add_memberships(pid, member_of)
    return _Person(person, country, phone_country, groups_nsn, member_of)


def _add_duplicate(gen: SampleValues, out: _Rows, pid: int, original: _Person,
                   nsn: list[str], pool: _GroupPool) -> None:
    """The same person entered twice: same number typed differently, other timestamp,
    sometimes other tags and groups."""
    r = gen.r
    person = original.row
    display, first, last = person["display_name"], person["first_name"], person["last_name"]
    dup = dict(person)
    dup["id"] = pid
    shift = timedelta(days=r.randrange(1, 400), seconds=r.randrange(86_400))
    dup["updated_at"] = person["updated_at"] + (shift if r.random() < 0.5 else -shift)
    if display and r.random() < 0.4:
        dup["display_name"] = r.choice((display.lower(), display.upper(), first or ""))
    if r.random() < 0.5:
        dup["tags"] = gen.tags()
    if r.random() < 0.3:
        dup["email"] = gen.email(first, last, pid)
    out.batch.people.append(dup)
    out.add_phone(pid, gen.format_phone(original.phone_country, nsn, original.country),
                  gen.phone_kind(), True)
    roll = r.random()
    if roll < 0.5:
        dup_groups = original.member_of
    elif roll < 0.75:
        dup_groups = pool.draw(gen)
    else:
        dup_groups = []
    out.add_memberships(pid, dup_groups)


def people_batches(gen: SampleValues, rows: int, n_companies: int,
                   group_rows: list[dict[str, Any]], batch_size: int) -> Iterator[Batch]:
    """``rows`` people (ids 1..rows, duplicates included) in batches of about ``batch_size``."""
    pool = _GroupPool.from_rows(group_rows)
    out = _Rows()
    pid = 0
    while pid < rows:
        pid += 1
        person = _add_person(gen, out, pid, n_companies, pool)
        if person.nsn is not None and pid < rows and gen.r.random() < 0.05:
            pid += 1
            _add_duplicate(gen, out, pid, person, person.nsn, pool)
        if len(out.batch.people) >= batch_size:
            yield out.take()
    if out.batch.people:
        yield out.batch
