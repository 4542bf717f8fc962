"""Decide, per contact, whether to spend a request, and which.

Rules, for a contact with payload hash H and its state S (looked up by phone):

- no S, or no remote id -> CREATE with ``create_body(payload)``; except that if the API already
  rejected exactly this payload (S.rejected_hash == H) -> SKIP_REJECTED.
- H == S.last_hash -> UNCHANGED (no request: a rerun with no CRM change sends nothing).
- H == S.rejected_hash -> SKIP_REJECTED (the API said no to exactly this payload; no request
  until the contact changes).
- otherwise UPDATE with ``changed_fields(S.last_payload, payload)``, or the full payload if no
  last payload is known. A diff that comes out empty is UNCHANGED: nothing to send.
- Intent sequence: S.pending_hash == H means the same intent was begun and its outcome is unknown,
  so its ``intent_seq`` (and so its idempotency key) is reused and the server replays instead of
  writing twice; anything else is a new intent, ``S.intent_seq + 1`` (1 without state). The key
  hashes the body sent (see ``payload.idempotency_key``). The caller stores ``pending_hash`` and
  ``intent_seq`` before sending and clears ``pending_hash`` once the outcome is known.
- A full resync plans against what ErzyCall holds (``sync.run.states_from_remote``), so the same
  rules find the drift; it also forgets rejected hashes, so rejected payloads are retried.
- Ownership (``core/ownership.py``): in merge mode an UPDATE whose body touches tags, groupIds or
  customFields first reads the contact: it takes 2 requests.
- Order: deferred or previously failed contacts first (they have waited longest), then the rest;
  each part by phone. ``requests_needed`` = the requests of every operation.
- Skipped operations carry no body and no idempotency key: nothing is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from erzy_pipelines.core.normalize import Contact
from erzy_pipelines.core.ownership import REPLACE, Ownership
from erzy_pipelines.core.payload import (
    changed_fields,
    create_body,
    idempotency_key,
    payload_hash,
    to_payload,
)

IN_DOUBT = "in-doubt"
"""A ``pending_hash`` meaning "a write may or may not have been applied, under no reusable
key": never equal to a payload hash, so the next plan sends every field under a new key."""


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"  # opt-in removal of a contact the sync created (core/removal.py)
    UNCHANGED = "unchanged"
    SKIP_REJECTED = "skip_rejected"


@dataclass(frozen=True)
class ContactState:
    """What the state store knows about one phone's contact in ErzyCall."""

    phone: str
    remote_id: str | None = None
    last_payload: dict[str, Any] | None = None  # last payload confirmed in ErzyCall
    last_hash: str | None = None
    last_outcome: str | None = None
    rejected_hash: str | None = None  # a payload the API rejected for good (4xx validation)
    intent_seq: int = 0
    pending_hash: str | None = None  # an intent begun whose outcome is unknown
    deferred: bool = False  # left out of an earlier run by the request budget
    failure_count: int = 0
    source_read_at: float | None = None  # when the CRM read last_payload came from began


@dataclass(frozen=True, slots=True)
class Operation:
    """One planned write (or a skipped one), with everything needed to send and record it."""

    action: Action
    contact: Contact
    payload: dict[str, Any]  # full desired state
    body: dict[str, Any]  # what is sent: create body, or the changed fields
    payload_hash: str
    remote_id: str | None
    intent_seq: int
    idempotency_key: str
    last_sent: dict[str, Any] | None = None  # the payload last confirmed (the sync's own part)
    requests: int = 1  # requests it takes: 2 when the contact must be read first (ownership)
    source_fp: int | None = None  # fingerprint of the CRM records the payload was made from


@dataclass(frozen=True)
class Plan:
    operations: list[Operation] = field(default_factory=list)
    unchanged: list[Contact] = field(default_factory=list)
    skipped: list[Operation] = field(default_factory=list)
    requests_needed: int = 0


def _write(
    action: Action,
    contact: Contact,
    payload: dict[str, Any],
    body: dict[str, Any],
    digest: str,
    state: ContactState | None,
    ownership: Ownership,
    source_fp: int | None = None,
    with_key: bool = True,
) -> Operation:
    if state is None:
        seq = 1
    elif state.pending_hash == digest:
        seq = state.intent_seq
    else:
        seq = state.intent_seq + 1
    key = ""
    if with_key:
        body_hash = digest if body == payload else payload_hash(body)  # no None values: same JSON
        key = idempotency_key(action.value, contact.phone, seq, body_hash)
    remote_id = state.remote_id if state is not None else None
    last_sent = state.last_payload if state is not None else None
    # A PATCH replacing a list is merged against a read made right before it, even after a full
    # listing (which may be hours old by then): it counts two requests.
    reads = action is Action.UPDATE and ownership.needs_current(body)
    return Operation(
        action, contact, payload, body, digest, remote_id, seq, key, last_sent, 1 + int(reads),
        source_fp,
    )


def _skip(
    contact: Contact,
    payload: dict[str, Any],
    digest: str,
    state: ContactState,
    source_fp: int | None,
) -> Operation:
    return Operation(
        Action.SKIP_REJECTED, contact, payload, {}, digest, state.remote_id, state.intent_seq, "",
        source_fp=source_fp,
    )


def plan_contact(
    contact: Contact,
    state: ContactState | None,
    ownership: Ownership = REPLACE,
    *,
    source_fp: int | None = None,
    with_key: bool = True,
) -> Operation | None:
    """The operation for one contact; None means UNCHANGED. ``source_fp``:
    the fingerprint of the CRM records the contact was made from, carried by the operation.
    ``with_key=False``: no idempotency key (a dry run sends nothing; hashing each body again is
    a third of planning a million creates)."""
    payload = to_payload(contact)
    digest = payload_hash(payload)
    if state is None or state.remote_id is None:
        if state is not None and state.rejected_hash == digest:
            return _skip(contact, payload, digest, state, source_fp)
        body = create_body(payload)
        return _write(
            Action.CREATE, contact, payload, body, digest, state, ownership,
            source_fp=source_fp, with_key=with_key,
        )
    # A write whose outcome never came back (crash, lost response) may or may not have been
    # applied, so what ErzyCall holds is unknown. The same intent is retried as it was (same
    # body, same key); anything else sends every field, so no half-known state survives.
    in_doubt = state.pending_hash is not None and state.pending_hash != digest
    if digest == state.last_hash and not in_doubt:
        return None
    if digest == state.rejected_hash:
        return _skip(contact, payload, digest, state, source_fp)
    if state.last_payload is None or in_doubt:
        body = dict(payload)
    else:
        body = changed_fields(state.last_payload, payload)
        if not body:
            return None
    return _write(
        Action.UPDATE, contact, payload, body, digest, state, ownership, source_fp, with_key
    )


def plan_operations(
    contacts: Iterable[Contact],
    states: Mapping[str, ContactState],
    ownership: Ownership = REPLACE,
    *,
    fingerprints: Mapping[str, int] | None = None,
    with_keys: bool = True,
) -> Plan:
    """Plan every contact against its state (keyed by phone); see the module rules.
    ``fingerprints``: each phone's CRM-record fingerprint, recorded with a successful write.
    ``with_keys=False`` (a dry run): operations without idempotency keys."""
    urgent: list[Operation] = []
    rest: list[Operation] = []
    unchanged: list[Contact] = []
    skipped: list[Operation] = []
    for contact in contacts:
        state = states.get(contact.phone)
        source_fp = fingerprints.get(contact.phone) if fingerprints is not None else None
        op = plan_contact(
            contact,
            state,
            ownership,
            source_fp=source_fp,
            with_key=with_keys,
        )
        if op is None:
            unchanged.append(contact)
        elif op.action is Action.SKIP_REJECTED:
            skipped.append(op)
        elif state is not None and (state.deferred or state.failure_count > 0):
            urgent.append(op)
        else:
            rest.append(op)
    urgent.sort(key=lambda op: op.contact.phone)
    rest.sort(key=lambda op: op.contact.phone)
    operations = urgent + rest
    return Plan(operations, unchanged, skipped, sum(op.requests for op in operations))
