"""A sample CRM with the mess real CRMs have, so every demo and test has something to chew on.

``seed_demo_crm`` writes a small, plausible CRM schema (companies, people, phone_numbers,
crm_groups, group_memberships) to any SQLAlchemy URL. The data is generated from
``random.Random(seed)`` alone, so a seed always gives the same rows on every database, and it is
deliberately dirty: phone numbers typed by humans in national and international formats from
several countries, extensions, the same person entered twice, invalid numbers, Unicode and missing
names, notes over the API's 5,000 characters, too many and too long tags, bad e-mails, people in
several groups and in none. Names, companies and e-mails are made up (e-mails use the reserved
example.* domains); phone numbers are random numbers in ranges ``phonenumbers`` accepts.

Rows are generated and inserted one batch at a time, so seeding a million people keeps memory flat.
"""

from __future__ import annotations

import argparse
import random
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from erzy_pipelines.core.urls import hide_password

# The ErzyCall contact groups (id, name) the sandbox preloads; the CRM groups below map onto them.
from erzy_pipelines.demo import DEMO_GROUPS

DEFAULT_DEMO_CRM_PATH = Path("data") / "demo_crm.sqlite"
"""Where the CLI puts the demo CRM, relative to the current directory."""

DEFAULT_DEMO_CRM_URL = f"sqlite:///{DEFAULT_DEMO_CRM_PATH.as_posix()}"


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

# --------------------------------------------------------------------------------------------
# Schema

metadata = sa.MetaData()
_TABLE_OPTS: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}

companies = sa.Table(
    "companies",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("country", sa.String(2)),
    **_TABLE_OPTS,
)

people = sa.Table(
    "people",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("display_name", sa.String(300)),
    sa.Column("first_name", sa.String(120)),
    sa.Column("last_name", sa.String(120)),
    sa.Column("company_id", sa.Integer, sa.ForeignKey("companies.id"), index=True),
    sa.Column("email", sa.String(320)),
    sa.Column("notes", sa.Text),
    sa.Column("tags", sa.Text),
    sa.Column("country", sa.String(2)),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    **_TABLE_OPTS,
)

phone_numbers = sa.Table(
    "phone_numbers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), nullable=False, index=True),
    sa.Column("number", sa.String(80), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("is_primary", sa.SmallInteger, nullable=False, default=0),
    **_TABLE_OPTS,
)

crm_groups = sa.Table(
    "crm_groups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("group_key", sa.String(100), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("erzycall_group_id", sa.String(100)),
    **_TABLE_OPTS,
)

group_memberships = sa.Table(
    "group_memberships",
    metadata,
    sa.Column("person_id", sa.Integer, sa.ForeignKey("people.id"), primary_key=True),
    sa.Column("group_id", sa.Integer, sa.ForeignKey("crm_groups.id"), primary_key=True),
    sa.Index("ix_group_memberships_group_id", "group_id"),
    **_TABLE_OPTS,
)

DEMO_TABLES = ("companies", "people", "phone_numbers", "crm_groups", "group_memberships")


@dataclass(frozen=True)
class SeedSummary:
    """What a seed wrote (or found, when ``created`` is False); ``url`` has its password hidden."""

    url: str
    people: int
    phone_numbers: int
    groups: int
    memberships: int
    companies: int = 0
    created: bool = True


class DemoCrmExistsError(ValueError):
    """The demo schema is already there and ``replace=False`` was asked for."""


# --------------------------------------------------------------------------------------------
# Made-up names and words (no real people's data)

_FIRST: dict[str, tuple[str, ...]] = {
    "US": ("James", "Mary", "Robert", "Patricia", "Michael", "Jennifer", "David", "Linda",
           "Emily", "Noah", "Olivia", "Liam", "Aaliyah", "DeShawn", "María", "Carlos", "Zoë"),
    "GB": ("Oliver", "Amelia", "Harry", "Isla", "George", "Ava", "Jack", "Siobhán", "Niamh",
           "Rhys", "Eleanor", "Callum"),
    "DE": ("Lukas", "Jürgen", "Sören", "Mia", "Lea", "Jörg", "Björn", "Günther", "Käthe",
           "Anna", "Maximilian", "Sophie"),
    "FR": ("Élodie", "François", "Hélène", "Théo", "Chloé", "Maël", "Cécile", "Loïc",
           "Noémie", "Jérôme", "Inès", "Gaëlle"),
    "BR": ("João", "Ana", "Luíza", "Thiago", "Márcia", "Sebastião", "Lucas", "Beatriz",
           "Gabriel", "Letícia"),
    "IN": ("Aarav", "Priya", "Rohan", "Ananya", "Vikram", "Saanvi", "Arjun", "Diya",
           "अर्जुन", "प्रिया"),
    "JP": ("太郎", "花子", "翔", "結衣", "陽菜", "蓮", "Haruto", "Yui"),
    "AR": ("محمد", "فاطمة", "علي", "مريم", "יוסף", "נועה", "דוד"),
    "CN": ("伟", "娜", "秀英", "强", "敏"),
}
_LAST: dict[str, tuple[str, ...]] = {
    "US": ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
           "Rodríguez", "Martínez", "O'Connor", "Nguyen", "Kim", "Washington"),
    "GB": ("Taylor", "Evans", "Thomas", "Roberts", "O'Brien", "Walker", "Wright", "Hughes",
           "MacDonald", "Ní Bhriain", "Patel"),
    "DE": ("Müller", "Schmidt", "Schneider", "Fischer", "Weiß", "Groß", "Schäfer", "Köhler",
           "Becker", "Hoffmann"),
    "FR": ("Martin", "Bernard", "Dubois", "Lefèvre", "Moreau", "Girard", "Rousseau",
           "Lemaître", "Fournier", "Faure"),
    "BR": ("Silva", "Santos", "Oliveira", "Souza", "Conceição", "Araújo", "Gonçalves",
           "Magalhães", "Pereira", "Lima"),
    "IN": ("Sharma", "Patel", "Gupta", "Iyer", "Reddy", "Nair", "Singh", "शर्मा"),
    "JP": ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "Sato", "Tanaka"),
    "AR": ("الحسيني", "حداد", "منصور", "כהן", "לוי", "מזרחי"),
    "CN": ("王", "李", "张", "刘", "陈"),
}
_COMPANY_A = ("Blue", "Silver", "North", "Bright", "Green", "Swift", "Quiet", "Golden", "Red",
              "Iron", "Clear", "Summit", "Little", "Grand", "Lake")
_COMPANY_B = ("Harbor", "Peak", "Field", "River", "Forge", "Labs", "Works", "Systems",
              "Logistics", "Foods", "Analytics", "Dynamics", "Garden", "Media")
_COMPANY_SUFFIX = {"US": ("Inc.", "LLC", "Corp."), "GB": ("Ltd", "plc"), "DE": ("GmbH", "AG"),
                   "FR": ("SARL", "SA"), "BR": ("Ltda.", "S.A."), "IN": ("Pvt. Ltd.",),
                   "JP": ("K.K.", "株式会社")}
_TAGS = ("customer", "prospect", "lead", "VIP", "newsletter", "b2b", "b2c", "hot", "cold",
         "follow-up", "webinar", "trade-show", "referral", "partner", "churned", "renewal-q3",
         "beta", "enterprise", "smb", "emea", "apac", "latam", "decision-maker", "billing",
         "support", "upsell", "demo-requested", "événement", "キャンペーン")
_LONG_TAGS = ("interested-in-the-annual-enterprise-plan-with-premium-support",
              "met at the spring trade show booth and asked for a callback next quarter",
              "legacy-import-from-old-crm-system-2019-do-not-delete-this-tag-please")
_NOTES = ("Met at the trade show.", "Prefers calls after 3pm.", "Asked for pricing.",
          "Callback requested about invoice #{n}.", "Rückruf erwünscht.", "電話希望",
          "Left voicemail, no answer.", "Wants a demo next week.", "Referred by a partner.",
          "Do not call before 9am local time.", "Switched from a competitor in Q{q}.")
_LOREM = ("The customer called about the renewal and asked us to review the whole history of "
          "the account, including every ticket, every invoice and every meeting note. ")
_KINDS = ("mobile", "work", "home", "other")

# Country weights; "AR" (Arabic/Hebrew names) and "CN" are name pools only, never phone regions.
_COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP")
_COUNTRY_WEIGHTS = (34, 15, 13, 10, 10, 9, 9)
_TRUNK = {"US": "", "GB": "0", "DE": "0", "FR": "0", "BR": "", "IN": "0", "JP": "0"}
_CC = {"US": "1", "GB": "44", "DE": "49", "FR": "33", "BR": "55", "IN": "91", "JP": "81"}
# Dialling out of these home regions; BR and JP use carrier codes people rarely type right.
_EXIT_PREFIX = {"US": "011", "GB": "00", "DE": "00", "FR": "00", "IN": "00"}
_US_AREAS = ("201", "202", "206", "212", "213", "303", "305", "312", "404", "415", "503",
             "512", "602", "615", "617", "646", "702", "704", "713", "718", "801", "919")
_BR_AREAS = ("11", "19", "21", "31", "41", "51", "61", "71", "81", "85")


class _Gen:
    """All randomness for one seed, drawn in a fixed order so a seed replays exactly."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def digits(self, n: int) -> str:
        return str(self.r.randrange(10**n)).zfill(n)

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    # ---- phone numbers: national significant number split in the groups people type ----
    def nsn_groups(self, country: str) -> list[str]:
        r = self.r
        if country == "US":
            return [r.choice(_US_AREAS), str(r.randrange(200, 1000)), self.digits(4)]
        if country == "GB":
            if r.random() < 0.5:
                return ["20", r.choice("78") + self.digits(3), self.digits(4)]
            return ["7" + r.choice("458") + self.digits(2), self.digits(6)]
        if country == "DE":
            kind = r.randrange(4)
            if kind == 0:
                return ["30", str(r.randrange(1, 10)) + self.digits(5)]
            if kind == 1:
                return ["30", str(r.randrange(1, 10)) + self.digits(7)]
            if kind == 2:
                return ["89", str(r.randrange(1, 10)) + self.digits(7)]
            return ["15" + r.choice("12579"), self.digits(8)] if r.random() < 0.5 else [
                "17" + str(r.randrange(10)), self.digits(7)]
        if country == "FR":
            # Paris landlines and metropolitan mobiles (0639 and 069x are overseas departments)
            first = r.choice(("1", "6", "7"))
            if first == "1":
                rest = self.digits(8)
            else:
                rest = r.choice("01245678" if first == "6" else "3456789") + self.digits(7)
            return [first, rest[0:2], rest[2:4], rest[4:6], rest[6:8]]
        if country == "BR":
            if r.random() < 0.7:
                return [r.choice(_BR_AREAS), "9" + self.digits(4), self.digits(4)]
            return [r.choice(_BR_AREAS), str(r.randrange(2, 6)) + self.digits(3), self.digits(4)]
        if country == "IN":
            return [str(r.randrange(6, 10)) + self.digits(4), self.digits(5)]
        # JP: Tokyo landline or mobile
        if r.random() < 0.5:
            return ["3", str(r.randrange(1, 10)) + self.digits(3), self.digits(4)]
        return [r.choice(("70", "80", "90")), str(r.randrange(1, 10)) + self.digits(3),
                self.digits(4)]

    def format_national(self, country: str, g: list[str]) -> str:
        r = self.r
        t = _TRUNK[country]
        if country == "US":
            a, e, line = g
            return r.choice((f"({a}) {e}-{line}", f"{a}-{e}-{line}", f"{a}.{e}.{line}",
                             f"{a}{e}{line}", f"1-{a}-{e}-{line}", f"1 ({a}) {e}-{line}"))
        if country == "BR":
            return r.choice((f"({g[0]}) {g[1]}-{g[2]}", f"{g[0]} {g[1]}-{g[2]}",
                             f"{g[0]}{g[1]}{g[2]}"))
        if country == "FR":
            return r.choice((t + " ".join(g), t + ".".join(g), t + "".join(g)))
        if country == "DE":
            return r.choice((f"0{g[0]} {g[1]}", f"0{g[0]}/{g[1]}", f"0{g[0]}-{g[1]}",
                             f"(0{g[0]}) {g[1]}", f"0{g[0]}{g[1]}"))
        if country == "JP":
            return r.choice((t + "-".join(g), t + "".join(g), t + " ".join(g)))
        if country == "IN":
            return r.choice((" ".join(g), t + " ".join(g), "".join(g), "-".join(g)))
        return r.choice((t + " ".join(g), t + "".join(g), f"({t}{g[0]}) {' '.join(g[1:])}"))

    def format_international(self, country: str, g: list[str], home: str | None) -> str:
        """International forms; the "00"/"011" exit prefix only where the home region dials it."""
        r = self.r
        cc = _CC[country]
        forms = [f"+{cc} {' '.join(g)}", f"+{cc}{''.join(g)}", f"+{cc}-{'-'.join(g)}"]
        if country == "US":
            forms.append(f"+1 ({g[0]}) {g[1]}-{g[2]}")
        if _TRUNK[country] == "0" and country != "JP":
            forms.append(f"+{cc} (0){' '.join(g)}")
        exit_prefix = _EXIT_PREFIX.get(home or "")
        if exit_prefix:
            forms.append(f"{exit_prefix} {cc} {' '.join(g)}")
        return r.choice(forms)

    def format_phone(self, country: str, g: list[str], home: str | None) -> str:
        """How a human typed it: national when dialled from home, international otherwise."""
        national_ok = home == country or (home is None and country == "US")
        if national_ok and self.r.random() < 0.6:
            text = self.format_national(country, g)
        else:
            text = self.format_international(country, g, home)
        if self.r.random() < 0.01:
            text = self.r.choice(("Tel: ", "tel:", "Mobile: ")) + text
        return text

    def extension(self) -> str:
        n = str(self.r.randrange(1, 10_000))
        return self.r.choice((f" x{n}", f" ext. {n}", f" ext {n}", f" Ext. {n}", f", ext {n}"))

    def invalid_phone(self) -> str:
        r = self.r
        return r.choice((
            f"555-01{self.digits(2)}", "12345", "N/A", "unknown", "-", "call reception",
            f"+1 999 {self.digits(3)} {self.digits(4)}", f"123-456-{self.digits(4)}",
            "0000000000", f"+44 20 {self.digits(3)}", f"+49 30 {self.digits(16)}",
            f"+999 {self.digits(8)}", f"00{self.digits(3)}",
        ))

    # ---- people ----
    def name(self, country: str | None) -> tuple[str | None, str | None, str | None]:
        r = self.r
        roll = r.random()
        if roll < 0.03:  # missing name, in the ways CRMs store "nothing"
            return r.choice(((None, None, None), ("", "", ""), ("   ", None, None),
                             (None, "", None)))
        pool = country or "US"
        if roll < 0.05:
            pool = "AR"
        elif roll < 0.06:
            pool = "CN"
        first, last = r.choice(_FIRST[pool]), r.choice(_LAST[pool])
        if pool in ("JP", "CN") and not first.isascii():
            display = f"{last} {first}" if r.random() < 0.7 else f"{last}{first}"
        else:
            display = f"{first} {last}"
        style = r.random()
        if style < 0.04:
            display = f"  {first}  {last} "
        elif style < 0.07:
            display = display.upper()
        elif style < 0.09:
            display = display.lower()
        elif style < 0.12:
            display = unicodedata.normalize("NFD", display)
        elif style < 0.14:
            display = f"{last}, {first}"
        return display, first, last

    def email(self, first: str | None, last: str | None, pid: int) -> str | None:
        r = self.r
        roll = r.random()
        if roll < 0.35:
            return None
        local = _ascii_slug(f"{first or ''}.{last or ''}") or f"user{pid}"
        if roll < 0.38:  # bad e-mails
            return r.choice((f"{local}@", f"{local} at example.com", f"{local}@example",
                             "@example.com", f"{local}@@example.com", f"{local}@example..com",
                             "n/a", f"{local}.example.com"))
        domain = r.choice(("example.com", "example.org", "example.net", "mail.example.com"))
        address = f"{local}{r.randrange(100) if r.random() < 0.4 else ''}@{domain}"
        if roll < 0.42:
            address = f" {address.capitalize()} "
        return address

    def notes(self) -> str | None:
        r = self.r
        roll = r.random()
        if roll < 0.02:  # over the API's 5,000 characters
            target = r.randrange(5_001, 9_000)
            return (_LOREM * (target // len(_LOREM) + 1))[:target]
        if roll < 0.35:
            return r.choice(_NOTES).format(n=r.randrange(1000, 9999), q=r.randrange(1, 5))
        return None

    def tags(self) -> str | None:
        r = self.r
        roll = r.random()
        if roll < 0.02:  # more than the API's 20 tags
            picked = [f"tag-{i}" for i in range(r.randrange(21, 40))]
        elif roll < 0.6:
            picked = r.sample(_TAGS, r.randrange(1, 5))
        elif roll < 0.65:
            return r.choice(("", " ", ",,"))
        else:
            return None
        if r.random() < 0.05:  # longer than the API's 50 characters
            picked.append(r.choice(_LONG_TAGS))
        if r.random() < 0.1:  # duplicates that differ in case and spacing
            picked.append(f" {picked[0].upper()} ")
        sep = r.choice((",", ", ", " , "))
        return sep.join(picked)

    def groups(self, group_ids: list[int], weights: list[int], internal_id: int) -> list[int]:
        r = self.r
        chosen: set[int] = set()
        if r.random() >= 0.25:
            k = r.choices((1, 2, 3, 4), weights=(55, 28, 12, 5))[0]
            while len(chosen) < k:
                chosen.add(r.choices(group_ids, weights=weights)[0])
        if r.random() < 0.015:
            if r.random() < 0.5:
                chosen.clear()
            chosen.add(internal_id)
        return sorted(chosen)

    def updated_at(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.r.randrange(5 * 365 * 86_400))


_EPOCH = datetime(2021, 1, 1)


def _ascii_slug(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c == "."))
    return kept.strip(".").lower()


# --------------------------------------------------------------------------------------------
# Generation


@dataclass
class _Batch:
    people: list[dict[str, Any]] = field(default_factory=list)
    phones: list[dict[str, Any]] = field(default_factory=list)
    memberships: list[dict[str, Any]] = field(default_factory=list)


def _company_rows(gen: _Gen, count: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for cid in range(1, count + 1):
        country = gen.r.choices(_COUNTRIES, weights=_COUNTRY_WEIGHTS)[0]
        suffix = gen.r.choice(_COMPANY_SUFFIX[country])
        base = f"{gen.r.choice(_COMPANY_A)} {gen.r.choice(_COMPANY_B)}"
        name = f"{suffix}{base}" if suffix == "株式会社" else f"{base} {suffix}"
        batch.append({"id": cid, "name": name, "country": country})
        if len(batch) >= BATCH_SIZE:
            yield batch
            batch = []
    if batch:
        yield batch


def _people_batches(gen: _Gen, rows: int, n_companies: int,
                    group_rows: list[dict[str, Any]], batch_size: int) -> Iterator[_Batch]:
    sendable = [g for g in group_rows if g["erzycall_group_id"] is not None]
    group_ids = [g["id"] for g in sendable]
    weight_of = {key: w for (key, _, _, w) in CRM_GROUPS}
    weights = [weight_of[g["group_key"]] for g in sendable]
    internal_id = next(g["id"] for g in group_rows if g["group_key"] == INTERNAL_GROUP_KEY)
    r = gen.r
    batch = _Batch()
    pid = 0
    phone_id = 0

    def add_phone(person_id: int, number: str, kind: str, primary: bool) -> None:
        nonlocal phone_id
        phone_id += 1
        batch.phones.append({"id": phone_id, "person_id": person_id, "number": number,
                             "kind": kind, "is_primary": 1 if primary else 0})

    while pid < rows:
        pid += 1
        home = r.choices(_COUNTRIES, weights=_COUNTRY_WEIGHTS)[0]
        country: str | None = home if r.random() >= 0.1 else None
        phone_country = home if r.random() >= 0.08 else r.choice(_COUNTRIES)
        display, first, last = gen.name(home)
        company_id = r.randrange(1, n_companies + 1) if r.random() < 0.65 else None
        person = {
            "id": pid, "display_name": display, "first_name": first, "last_name": last,
            "company_id": company_id, "email": gen.email(first, last, pid),
            "notes": gen.notes(), "tags": gen.tags(), "country": country,
            "updated_at": gen.updated_at(),
        }
        batch.people.append(person)

        groups_nsn: list[str] | None = None
        roll = r.random()
        if roll < 0.01:
            pass  # nobody wrote a number down
        elif roll < 0.04:
            add_phone(pid, gen.invalid_phone(), r.choice(_KINDS), True)
        else:
            groups_nsn = gen.nsn_groups(phone_country)
            number = gen.format_phone(phone_country, groups_nsn, country)
            if r.random() < 0.03:
                number += gen.extension()
            add_phone(pid, number, r.choice(("mobile", "mobile", "work", "home")), True)
        if r.random() < 0.25:
            other = gen.nsn_groups(home)
            add_phone(pid, gen.format_phone(home, other, country), r.choice(_KINDS), False)
        member_of = gen.groups(group_ids, weights, internal_id)
        for gid in member_of:
            batch.memberships.append({"person_id": pid, "group_id": gid})

        # The same person entered twice: same number typed differently, other timestamp,
        # sometimes other tags and groups.
        if groups_nsn is not None and pid < rows and r.random() < 0.05:
            pid += 1
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
            batch.people.append(dup)
            add_phone(pid, gen.format_phone(phone_country, groups_nsn, country),
                      r.choice(_KINDS), True)
            roll = r.random()
            if roll < 0.5:
                dup_groups = member_of
            elif roll < 0.75:
                dup_groups = gen.groups(group_ids, weights, internal_id)
            else:
                dup_groups = []
            for gid in dup_groups:
                batch.memberships.append({"person_id": pid, "group_id": gid})

        if len(batch.people) >= batch_size:
            yield batch
            batch = _Batch()
    if batch.people:
        yield batch


# --------------------------------------------------------------------------------------------
# Public API


def _prepare_sqlite_path(url: sa.URL) -> None:
    """SQLite creates the file but not its folder; create the folder so a fresh checkout works."""
    if url.get_backend_name() != "sqlite":
        return
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _schema_present(conn: sa.Connection) -> bool:
    inspector = sa.inspect(conn)
    return all(inspector.has_table(name) for name in DEMO_TABLES)


def _count(conn: sa.Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _summary(conn: sa.Connection, url: sa.URL, created: bool) -> SeedSummary:
    return SeedSummary(
        url=hide_password(url),
        people=_count(conn, people),
        phone_numbers=_count(conn, phone_numbers),
        groups=_count(conn, crm_groups),
        memberships=_count(conn, group_memberships),
        companies=_count(conn, companies),
        created=created,
    )


def _reset_sequences(conn: sa.Connection) -> None:
    """Explicit ids leave PostgreSQL sequences at 1; move them past the seeded rows so rows
    added later by hand (demos: "add a person and watch it sync") get fresh ids."""
    if conn.dialect.name != "postgresql":
        return
    for table in (companies, people, phone_numbers, crm_groups):
        conn.execute(sa.text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
            f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
        ))


def seed_demo_crm(url: str, rows: int = 1000, seed: int = 0, *, replace: bool = True,
                  batch_size: int = BATCH_SIZE) -> SeedSummary:
    """Create the sample CRM at ``url`` with ``rows`` people generated from ``seed``.

    ``replace=True`` drops the demo tables first; ``replace=False`` refuses (DemoCrmExistsError)
    when they already exist. Only the five demo tables are touched.
    """
    if rows < 0:
        raise ValueError("rows must be >= 0")
    sa_url = sa.make_url(url)
    _prepare_sqlite_path(sa_url)
    engine = sa.create_engine(sa_url)
    try:
        with engine.begin() as conn:
            if _schema_present(conn) and not replace:
                raise DemoCrmExistsError(
                    f"the demo CRM already exists at {hide_password(sa_url)}"
                    "; pass replace=True to recreate it"
                )
            metadata.drop_all(conn, checkfirst=True)
            metadata.create_all(conn)

            gen = _Gen(seed)
            group_rows = [
                {"id": i, "group_key": key, "name": name, "erzycall_group_id": gid}
                for i, (key, name, gid, _) in enumerate(CRM_GROUPS, start=1)
            ]
            conn.execute(crm_groups.insert(), group_rows)
            n_companies = max(5, rows // 25)
            for chunk in _company_rows(gen, n_companies):
                conn.execute(companies.insert(), chunk)
            for batch in _people_batches(gen, rows, n_companies, group_rows, batch_size):
                conn.execute(people.insert(), batch.people)
                if batch.phones:
                    conn.execute(phone_numbers.insert(), batch.phones)
                if batch.memberships:
                    conn.execute(group_memberships.insert(), batch.memberships)
            _reset_sequences(conn)
            return _summary(conn, sa_url, created=True)
    finally:
        engine.dispose()


def ensure_demo_crm(url: str, rows: int = 1000, seed: int = 0) -> SeedSummary:
    """Seed the demo CRM unless its tables are already there (then report what is there)."""
    sa_url = sa.make_url(url)
    _prepare_sqlite_path(sa_url)
    engine = sa.create_engine(sa_url)
    try:
        with engine.connect() as conn:
            if _schema_present(conn):
                return _summary(conn, sa_url, created=False)
    finally:
        engine.dispose()
    return seed_demo_crm(url, rows, seed, replace=True)


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    """``python -m erzy_pipelines.crm.seed``: write the demo CRM (SQLite file by default)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--url", default=DEFAULT_DEMO_CRM_URL, help="SQLAlchemy URL")
    parser.add_argument("--rows", type=int, default=1000, help="number of people")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="only seed if the schema is missing")
    args = parser.parse_args(argv)
    if args.keep:
        summary = ensure_demo_crm(args.url, args.rows, args.seed)
    else:
        summary = seed_demo_crm(args.url, args.rows, args.seed)
    verb = "seeded" if summary.created else "kept existing"
    out(f"{verb} {summary.url}: {summary.people} people, {summary.phone_numbers} phone numbers, "
        f"{summary.groups} groups, {summary.memberships} memberships")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
