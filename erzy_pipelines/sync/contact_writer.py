"""The requests one operation makes, and the state it commits when they succeed.

``send.py`` decides *whether* an operation is sent and what its failures mean; this module holds
*how* each kind is carried out against ErzyCall, with the answers that are part of doing it:

- a create that meets ``409 CONFLICT`` adopts the contact holding the phone (exact-phone lookup,
  then a PATCH of only what the sync owns and differs; see ``core/ownership.py``);
- an update reads the contact first when a list it replaces must keep ErzyCall's own entries,
  and a ``404`` with the API's ``NOT_FOUND`` envelope creates the contact again (``recreated``);
- a deletion (opt-in) takes a contact already gone as deleted.

Any other error is raised to the caller. Whenever a body depends on what ErzyCall holds, its
idempotency key hashes that body: one key never carries two different bodies.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from erzy_pipelines.core.outcomes import Outcome
from erzy_pipelines.core.ownership import Ownership
from erzy_pipelines.core.payload import create_body, idempotency_key, payload_hash, scoped_key
from erzy_pipelines.core.plan import Action, Operation
from erzy_pipelines.erzycall import errors
from erzy_pipelines.erzycall.client import ErzyCallClient
from erzy_pipelines.erzycall.models import RemoteContact
from erzy_pipelines.sync.report import OperationResult


def remote_payload(remote: RemoteContact) -> dict[str, Any]:
    """The remote contact in the same shape as ``core.payload.to_payload``, to diff against."""
    return {**remote.as_payload(), "groupIds": sorted(remote.group_ids)}


class ContactWriter:
    """Carries out creates, updates and deletions; each fills in the operation's ``result``
    and, on success, commits the outcome to the state store."""

    def __init__(
        self,
        client: ErzyCallClient,
        store: Any,
        run_id: str,
        ownership: Ownership,
        read_started: float | None = None,
    ) -> None:
        self.client, self.store, self.run_id = client, store, run_id
        self.ownership = ownership
        self.read_started = read_started  # when this run's CRM read began (epoch seconds)

    def _key(self, action: str, phone: str, seq: int, body_hash: str) -> str:
        return scoped_key(idempotency_key(action, phone, seq, body_hash), self.store.account)

    def create(
        self, op: Operation, result: OperationResult, outcome: str = Outcome.CREATED
    ) -> None:
        try:
            remote = self.client.create_contact(create_body(op.payload), op.idempotency_key)
        except errors.ConflictError:
            self._adopt(op, result)
            return
        result.http_status = 201
        self._succeeded(op, result, remote.id, created=True, outcome=outcome)

    def delete(self, op: Operation, result: OperationResult) -> None:
        """Remove a contact the sync created (opt-in): gone already (by hand, or our own
        earlier attempt whose answer was lost) is as good as deleted."""
        assert op.remote_id is not None
        try:
            self.client.delete_contact(op.remote_id, op.idempotency_key)
            result.http_status = 204
        except errors.NotFoundError as exc:
            if not exc.from_the_api:
                raise
            result.http_status = 404
        self.store.record_deleted(op.contact.phone, self.run_id)
        result.outcome = Outcome.DELETED

    def _adopt(self, op: Operation, result: OperationResult) -> None:
        existing = self.client.find_contact_by_phone(op.contact.phone)
        if existing is None:
            raise errors.ConflictError(
                "create answered 409 CONFLICT but no contact with this exact phone was found",
                status=409,
                code="CONFLICT_UNRESOLVED",
            )
        diff = self.ownership.adoption(op.payload, remote_payload(existing))
        result.http_status = 200
        if diff:
            # The diff depends on what ErzyCall holds right now, so the key hashes the diff:
            # the same key must never carry two different bodies.
            key = self._key("adopt", op.contact.phone, op.intent_seq, payload_hash(diff))
            self.client.update_contact(existing.id, diff, key)
        self._succeeded(op, result, existing.id, created=False, outcome=Outcome.ADOPTED)

    def update(self, op: Operation, result: OperationResult) -> None:
        assert op.remote_id is not None
        phone = op.contact.phone
        try:
            body, key = op.body, op.idempotency_key
            if self.ownership.needs_current(body):
                # Read right before the PATCH, also in a reconcile: its listing may be hours
                # old, and an agent's tag added since must survive the list being replaced.
                current = remote_payload(self.client.get_contact(op.remote_id))
                body = self.ownership.merged(body, op.payload, op.last_sent, current)
                if body != op.body:  # it depends on ErzyCall's values: the key hashes it
                    key = self._key("update", phone, op.intent_seq, payload_hash(body))
            if body:
                self.client.update_contact(op.remote_id, body, key)
        except errors.NotFoundError as exc:
            if not exc.from_the_api:
                raise
            # Deleted in ErzyCall: create it again, with a key of its own so the recreate can
            # never replay an old create of this phone. The old id stays until the new one is
            # recorded.
            result.not_found = True
            key = self._key("recreate", phone, op.intent_seq, op.payload_hash)
            recreate = replace(op, action=Action.CREATE, idempotency_key=key)
            self.create(recreate, result, outcome=Outcome.RECREATED)
            return
        result.http_status = 200 if body else None
        self._succeeded(op, result, op.remote_id, created=False, outcome=Outcome.UPDATED)

    def _succeeded(
        self, op: Operation, result: OperationResult, remote_id: str, *, created: bool, outcome: str
    ) -> None:
        self.store.record_success(
            op.contact.phone,
            self.run_id,
            remote_id=remote_id,
            payload=op.payload,
            payload_hash=op.payload_hash,
            crm_ids=list(op.contact.crm_ids),
            created=created,
            outcome=outcome,
            source_fp=op.source_fp,
            source_read_at=self.read_started,
        )
        result.outcome = outcome
        result.remote_id = remote_id
        result.not_found = False
