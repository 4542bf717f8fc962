"""`erzy-pipelines baseline`: start the state from what ErzyCall already holds, in one listing.

For users who move from another tool (or a script) that already filled ErzyCall with their CRM's
contacts: without a baseline the first sync would try to create every contact, and each would
cost a POST answered 409, a search and an adoption (three requests instead of none). The
baseline reads the CRM (normalizing it, as a sync does), lists ErzyCall once (⌈N/100⌉ requests)
and records, for every CRM contact found there by phone, its id and what it holds:

- holds exactly what the sync would send → *settled*: the next sync spends nothing on it;
- holds something else → the next sync PATCHes only the fields that differ;
- not in ErzyCall → the next sync creates it. Contacts only in ErzyCall are left alone.

It fills in what the state does not know and never overwrites it: a phone the state already
has a row for is counted and skipped. It sends no write. Outcomes are recorded as
``baseline`` in the state (``last_outcome``), not as writes of the sync: the sync takes
ownership of the values it would send (``ERZY_OWNERSHIP`` as for adoption), and a contact
found this way is not "created by the sync".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from erzy_pipelines.core.normalize import Contact
from erzy_pipelines.core.ownership import Ownership
from erzy_pipelines.core.payload import payload_hash, to_payload
from erzy_pipelines.erzycall.models import RemoteContact
from erzy_pipelines.sync.send import remote_payload


def baseline_rows(
    contacts: Sequence[Contact],
    fingerprints: Mapping[str, int],
    remote: Iterable[RemoteContact],
    ownership: Ownership,
    known_phones: set[str],
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """State rows for the CRM contacts ErzyCall already holds, and what was found:
    ``settled``, ``differs``, ``missing`` (not in ErzyCall), ``known`` (already in the state),
    ``only_in_erzycall``."""
    by_phone = {c.phone: c for c in remote}
    counts: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    for contact in contacts:
        found = by_phone.pop(contact.phone, None)
        if contact.phone in known_phones:
            counts["known"] += 1
            continue
        if found is None:
            counts["missing"] += 1
            continue
        payload = to_payload(contact)
        digest = payload_hash(payload)
        held = ownership.owned_view(remote_payload(found), payload)
        held_hash = payload_hash(held)
        settled = held_hash == digest
        counts["settled" if settled else "differs"] += 1
        rows.append(
            {
                "phone": contact.phone,
                "remote_id": found.id,
                "last_payload": payload if settled else held,
                "last_hash": digest if settled else held_hash,
                "crm_ids": sorted(contact.crm_ids),
                "source_fp": fingerprints.get(contact.phone) if settled else None,
            }
        )
    counts["only_in_erzycall"] = len(by_phone)
    return rows, counts
