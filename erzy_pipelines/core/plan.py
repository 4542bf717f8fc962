"""Decide, per contact, whether to spend a request, and which.

Rules, for a contact with payload hash H and its state S (looked up by phone):

- no S, or no remote id -> CREATE with ``create_body(payload)``; except that if the API already
  rejected exactly this payload (S.rejected_hash == H) -> SKIP_REJECTED.
- full_resync and a remote id -> UPDATE with the full payload (the caller reconciles drift the
  hashes cannot see); rejected payloads are retried too (e.g. after a missing group was created).
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
- Order: deferred or previously failed contacts first (they have waited longest), then the rest;
  each part by phone. ``requests_needed`` = number of operations (one request each).
- Skipped operations carry no body and no idempotency key: nothing is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from erzy_pipelines.core.normalize import Contact
from erzy_pipelines.core.payload import (
    changed_fields,
    create_body,
    idempotency_key,
    payload_hash,
    to_payload,
)


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
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


@dataclass(frozen=True)
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
) -> Operation:
    if state is None:
        seq = 1
    elif state.pending_hash == digest:
        seq = state.intent_seq
    else:
        seq = state.intent_seq + 1
    key = idempotency_key(action.value, contact.phone, seq, payload_hash(body))
    remote_id = state.remote_id if state is not None else None
    return Operation(action, contact, payload, body, digest, remote_id, seq, key)


def _skip(contact: Contact, payload: dict[str, Any], digest: str, state: ContactState) -> Operation:
    return Operation(
        Action.SKIP_REJECTED, contact, payload, {}, digest, state.remote_id, state.intent_seq, ""
    )


def plan_contact(
    contact: Contact, state: ContactState | None, *, full_resync: bool = False
) -> Operation | None:
    """The operation for one contact; None means UNCHANGED."""
    payload = to_payload(contact)
    digest = payload_hash(payload)
    if state is None or state.remote_id is None:
        if state is not None and state.rejected_hash == digest and not full_resync:
            return _skip(contact, payload, digest, state)
        return _write(Action.CREATE, contact, payload, create_body(payload), digest, state)
    if full_resync:
        return _write(Action.UPDATE, contact, payload, dict(payload), digest, state)
    # A write whose outcome never came back (crash, lost response) may or may not have been
    # applied, so what ErzyCall holds is unknown. The same intent is retried as it was (same
    # body, same key); anything else sends every field, so no half-known state survives.
    in_doubt = state.pending_hash is not None and state.pending_hash != digest
    if digest == state.last_hash and not in_doubt:
        return None
    if digest == state.rejected_hash:
        return _skip(contact, payload, digest, state)
    if state.last_payload is None or in_doubt:
        body = dict(payload)
    else:
        body = changed_fields(state.last_payload, payload)
        if not body:
            return None
    return _write(Action.UPDATE, contact, payload, body, digest, state)


def plan_operations(
    contacts: Iterable[Contact],
    states: Mapping[str, ContactState],
    *,
    full_resync: bool = False,
) -> Plan:
    """Plan every contact against its state (keyed by phone); see the module rules."""
    urgent: list[Operation] = []
    rest: list[Operation] = []
    unchanged: list[Contact] = []
    skipped: list[Operation] = []
    for contact in contacts:
        state = states.get(contact.phone)
        op = plan_contact(contact, state, full_resync=full_resync)
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
    return Plan(operations, unchanged, skipped, len(operations))
