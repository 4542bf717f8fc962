"""What normalization made of each CRM record, kept in the state database by fingerprint.

A record whose fingerprint (its columns, its memberships, the normalization settings and the
versions of the rules and libraries normalization runs on; see ``sync/prepare.py``)
has not changed since the last run is not normalized again: its phone, its contact or its
reject come from here. It is a memo of a pure function, so it is right whatever the run that
wrote it did next (a dry run, a failed send, another group): only the fingerprint decides
whether an entry applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import sqlalchemy as sa

from erzy_pipelines.core.contact_codec import decode_contact, encode_contact
from erzy_pipelines.core.normalize import Contact, Reject
from erzy_pipelines.state import StateStore
from erzy_pipelines.state.database import run_write, upsert
from erzy_pipelines.state.schema import crm_records

_IN_CHUNK = 500
_WRITE_CHUNK = 5000
_COLUMNS = (  # the order of the rows save() writes
    "account_id", "crm_id", "fingerprint", "phone", "contact",
    "reject_reason", "reject_detail", "reject_phone",
)


Known = tuple[int, str | None]
"""(fingerprint, E.164 phone or None when normalization rejected the record)."""


class RecordCache:
    """The ``erzy_crm_records`` rows of the store's account."""

    def __init__(self, store: StateStore) -> None:
        self.engine = store.engine
        self.account = store.account

    def _mine(self, *conditions: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
        return sa.and_(crm_records.c.account_id == self.account, *conditions)

    def load(self) -> tuple[dict[str, Known], dict[str, Reject]]:
        """crm_id → (fingerprint, phone) of every stored record, and the stored rejects by
        crm_id (contact bodies are read on demand: :meth:`contacts`)."""
        c = crm_records.c
        mine = self._mine()
        rejects_query = sa.select(
            c.crm_id, c.reject_reason, c.reject_detail, c.reject_phone
        ).where(mine, c.reject_reason.is_not(None))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.crm_id, c.fingerprint, c.phone).where(mine))
            known = {crm_id: (fp, phone) for crm_id, fp, phone in rows}
            rejects = {
                crm_id: Reject(crm_id, reason, detail or "", raw)
                for crm_id, reason, detail, raw in conn.execute(rejects_query)
            }
        return known, rejects

    def contacts(self, crm_ids: Iterable[str]) -> dict[str, tuple[int, Contact]]:
        """crm_id → (fingerprint, stored contact) of these records (rejects are absent)."""
        c = crm_records.c
        out: dict[str, tuple[int, Contact]] = {}
        wanted = sorted(set(crm_ids))
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), _IN_CHUNK):
                query = sa.select(c.crm_id, c.fingerprint, c.contact).where(
                    self._mine(c.crm_id.in_(wanted[i : i + _IN_CHUNK]), c.contact.is_not(None))
                )
                for crm_id, fp, data in conn.execute(query):
                    contact = decode_contact(bytes(data))
                    if contact is not None:
                        out[crm_id] = (fp, contact)
        return out

    def save(
        self,
        results: Mapping[str, tuple[int, Contact | Reject, bytes | None]],
        vanished: Sequence[str] = (),
    ) -> None:
        """Store what normalization made of these records (crm_id → (fingerprint, result, the
        contact's ``encode_contact`` bytes if already at hand)) and forget the records that
        left the CRM. Another run writing the same record at once is harmless: each entry
        pairs a fingerprint with what that exact input normalizes to."""
        account, rows = self.account, []
        for crm_id, (fp, result, data) in results.items():
            if isinstance(result, Contact):
                data = data if data is not None else encode_contact(result)
                rows.append((account, crm_id, fp, result.phone, data, None, None, None))
            else:
                rows.append(
                    (account, crm_id, fp, None, None, result.reason, result.detail, result.phone)
                )
        c = crm_records.c
        gone = sorted(set(vanished))
        for i in range(0, len(gone), _WRITE_CHUNK):
            ids = gone[i : i + _WRITE_CHUNK]

            def drop(conn: sa.Connection, ids: list[str] = ids) -> None:
                for j in range(0, len(ids), _IN_CHUNK):
                    chunk = ids[j : j + _IN_CHUNK]
                    conn.execute(crm_records.delete().where(self._mine(c.crm_id.in_(chunk))))

            run_write(self.engine, drop)
        for i in range(0, len(rows), _WRITE_CHUNK):
            put = rows[i : i + _WRITE_CHUNK]
            run_write(self.engine, lambda conn, put=put: upsert(conn, crm_records, _COLUMNS, put))
