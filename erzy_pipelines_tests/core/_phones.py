"""Realistic phone numbers for the property tests: phonenumbers' example numbers of every
region, written the ways CRMs hold them (E.164, international with spaces, "00" prefix, tel: URI,
national format with the row's country). Fuzzed rows mix these with arbitrary values, so most
examples give a Contact and the checks on contacts actually run.
"""

from __future__ import annotations

import phonenumbers as pn
from hypothesis import strategies as st
from phonenumbers import PhoneNumberFormat as Fmt
from phonenumbers import PhoneNumberType as Kind


def _written_forms() -> list[tuple[str, str | None]]:
    """(phone text, region the text needs, or None when the text is international)."""
    forms: list[tuple[str, str | None]] = []
    for region in sorted(pn.SUPPORTED_REGIONS):
        for kind in (Kind.MOBILE, Kind.FIXED_LINE):
            number = pn.example_number_for_type(region, kind)
            if number is None:
                continue
            intl = pn.format_number(number, Fmt.INTERNATIONAL)
            forms += [
                (pn.format_number(number, Fmt.E164), None),
                (intl, None),
                ("00" + intl[1:], None),
                (pn.format_number(number, Fmt.RFC3966), None),
                (pn.format_number(number, Fmt.NATIONAL), region),
            ]
    return forms


FORMS = _written_forms()


@st.composite
def valid_phone_and_country(draw: st.DrawFn) -> tuple[str, object]:
    """A valid number as a CRM holds it, and a country that lets it parse."""
    text, region = draw(st.sampled_from(FORMS))
    if region is None:  # international: the country column does not matter
        country = draw(st.sampled_from([None, "", "us", "DE", "Germany", "XX", 7]))
    else:  # national format: needs its own country, in any spelling
        country = draw(st.sampled_from([region, region.lower(), f" {region} "]))
    return text, country


CRM_IDS = st.one_of(
    st.integers(min_value=1, max_value=10**12),
    st.text(alphabet="abcdefXYZ0123456789-_", min_size=1, max_size=24),
)
