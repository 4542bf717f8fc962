"""Made-up values a human would have typed into a CRM, drawn from one seeded random stream.

Every random draw of the sample CRM goes through ``SampleValues``, in a fixed order, so one seed
replays the same rows on every database. Reordering or adding a draw changes every row after it:
keep the order when editing. Names, companies and e-mails are made up (no real people's data);
phone numbers are random numbers in ranges ``phonenumbers`` accepts.
"""

from __future__ import annotations

import random
import unicodedata
from datetime import datetime, timedelta

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


class SampleValues:
    """All randomness for one seed, drawn in a fixed order so a seed replays exactly."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def digits(self, n: int) -> str:
        return str(self.r.randrange(10**n)).zfill(n)

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    # ---- countries and companies ----
    def country(self) -> str:
        """A phone region, weighted by how many contacts live there."""
        return self.r.choices(_COUNTRIES, weights=_COUNTRY_WEIGHTS)[0]

    def any_country(self) -> str:
        """A phone region, every one equally likely (a contact's number from abroad)."""
        return self.r.choice(_COUNTRIES)

    def phone_kind(self) -> str:
        return self.r.choice(_KINDS)

    def company_name(self, country: str) -> str:
        suffix = self.r.choice(_COMPANY_SUFFIX[country])
        base = f"{self.r.choice(_COMPANY_A)} {self.r.choice(_COMPANY_B)}"
        return f"{suffix}{base}" if suffix == "株式会社" else f"{base} {suffix}"

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

