"""The ``/api/v1`` routes of the sandbox: which handler and scope a method + path gets, and the
contact and contact-group handlers themselves.

Kept apart from ``app`` so the request pipeline (keys, limits, faults, log) and what each route
does can be read and changed separately. Handlers raise ``ApiError``; the app turns it into the
error envelope.

Choices where the docs say [unknown]:

* Pagination: every non-empty page carries a cursor, the last one too; ``hasMore`` says whether
  another page exists. ``pageSize`` echoes ``limit``. (Cursor format: see ``messages``.)
* ``search`` (and ``/contacts/search?q=``) matches a case-insensitive substring of the title, or,
  when the term is digits (``+``, spaces, dashes, dots and parentheses ignored), a substring of
  the phone's digits, so an unencoded ``+`` that arrives as a space still finds the phone.
* ``tags`` filter: comma-separated, a contact matches if it has ANY of them (exact, case
  sensitive). ``groupId``: the contact is a member; an unknown group id just matches nothing.
* ``/contacts/search`` results are in creation order; ``q`` needs 2 non-blank characters.
* ``optedOut`` is always present in contact responses; only ``add_contact_direct`` sets it.
* An empty PATCH body ``{}`` is valid and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from .api_errors import ApiError, not_found, validation_error
from .contacts_db import ContactStore, PhoneTaken
from .idempotency import Idempotency
from .messages import (
    Request,
    Response,
    bad_cursor,
    canonical,
    decode_cursor,
    encode_cursor,
    parse_json,
)
from .validation import CONTACT_ID_RE, check_contact_id, int_param, validate_contact

Handler = Callable[..., Response]
"""``handler(request, bucket, *path_args)``; ``bucket`` is the hashed API key (or ``"-"``)."""


def matches_search(contact: Mapping[str, Any], term: str) -> bool:
    term = term.strip()
    if not term:
        return True
    if term.casefold() in contact["title"].casefold():
        return True
    digits = "".join(ch for ch in term if ch not in "+ -.()")
    return digits.isdigit() and digits in contact["phone"]


def _phone_taken() -> ApiError:
    return ApiError(409, "CONFLICT", "A contact with this phone number already exists.")


class ApiRoutes:
    """The contact and group routes over one store; ``count(name)`` bumps an app counter."""

    def __init__(
        self, store: ContactStore, idempotency: Idempotency, count: Callable[[str], None]
    ) -> None:
        self.store = store
        self.idempotency = idempotency
        self._count = count

    def route(self, method: str, sub: str) -> tuple[Handler, str, tuple[str, ...]]:
        """The handler, the scope it needs and its path arguments; 404 or 405 otherwise."""
        parts = [unquote(p) for p in sub.strip("/").split("/")] if sub.strip("/") else []
        table: dict[str, tuple[Handler, str]]
        args: tuple[str, ...] = ()
        if parts == ["contacts"]:
            table = {
                "GET": (self.list_contacts, "contacts:read"),
                "POST": (self.create_contact, "contacts:write"),
            }
        elif parts == ["contacts", "search"]:
            table = {"GET": (self.search_contacts, "contacts:read")}
        elif len(parts) == 2 and parts[0] == "contacts":
            table = {
                "GET": (self.get_contact, "contacts:read"),
                "PATCH": (self.patch_contact, "contacts:write"),
                "DELETE": (self.delete_contact, "contacts:write"),
            }
            args = (parts[1],)
        elif parts == ["contact-groups"]:
            table = {"GET": (self.list_groups, "contact_groups:read")}
        else:
            raise not_found("Route")
        if method not in table:
            raise ApiError(
                405,
                "METHOD_NOT_ALLOWED",
                f"{method} is not allowed here.",
                headers={"Allow": ", ".join(table)},
            )
        fn, scope = table[method]
        return fn, scope, args

    # -- contacts -------------------------------------------------------------------------
    def list_contacts(self, req: Request, bucket: str) -> Response:
        q = req.query
        limit = int_param(q, "limit", 25, 1, 100)
        cursor = q.get("cursor") or None
        after = 0
        if cursor:
            last_id = decode_cursor(cursor)
            seq = self.store.seq_of(last_id) if CONTACT_ID_RE.match(last_id) else None
            if seq is None:
                raise bad_cursor()
            after = seq
        search = q.get("search") or ""
        group = q.get("groupId") or None
        tags = {t.strip() for t in (q.get("tags") or "").split(",") if t.strip()}
        items: list[dict[str, Any]] = []
        has_more = False
        with self.store.lock:
            for contact in self.store.iter_live(after):
                if search and not matches_search(contact, search):
                    continue
                if group and group not in contact["groupIds"]:
                    continue
                if tags and not tags.intersection(contact["tags"]):
                    continue
                if len(items) == limit:
                    has_more = True
                    break
                items.append(contact)
        next_cursor = encode_cursor(items[-1]["id"]) if items else cursor
        return Response(
            200,
            {
                "data": items,
                "pagination": {"cursor": next_cursor, "hasMore": has_more, "pageSize": limit},
            },
        )

    def search_contacts(self, req: Request, bucket: str) -> Response:
        term = (req.query.get("q") or "").strip()
        if len(term) < 2:
            raise validation_error([{"field": "q", "message": "must be at least 2 characters"}])
        limit = int_param(req.query, "limit", 10, 1, 50)
        found: list[dict[str, Any]] = []
        with self.store.lock:
            for contact in self.store.iter_live():
                if matches_search(contact, term):
                    found.append(contact)
                    if len(found) == limit:
                        break
        return Response(200, {"data": found})

    def create_contact(self, req: Request, bucket: str) -> Response:
        body = parse_json(req.body)

        def action() -> Response:
            fields = validate_contact(body, partial=False, groups=self.store.group_ids)
            try:
                contact = self.store.create(fields)
            except PhoneTaken:
                raise _phone_taken() from None
            self._count("writes")
            return Response(201, {"data": contact})

        return self.idempotency.run(req, bucket, canonical(body), action)

    def get_contact(self, req: Request, bucket: str, contact_id: str) -> Response:
        contact = self.store.get(check_contact_id(contact_id))
        if contact is None:
            raise not_found("Contact")
        return Response(200, {"data": contact})

    def patch_contact(self, req: Request, bucket: str, contact_id: str) -> Response:
        check_contact_id(contact_id)
        body = parse_json(req.body)

        def action() -> Response:
            changes = validate_contact(body, partial=True, groups=self.store.group_ids)
            try:
                contact = self.store.update(contact_id, changes)
            except PhoneTaken:
                raise _phone_taken() from None
            if contact is None:
                raise not_found("Contact")
            self._count("writes")
            return Response(200, {"data": contact})

        return self.idempotency.run(req, bucket, canonical(body), action)

    def delete_contact(self, req: Request, bucket: str, contact_id: str) -> Response:
        check_contact_id(contact_id)

        def action() -> Response:
            if not self.store.delete(contact_id):
                raise not_found("Contact")
            self._count("writes")
            return Response(204)

        return self.idempotency.run(req, bucket, "", action)

    # -- contact groups -------------------------------------------------------------------
    def list_groups(self, req: Request, bucket: str) -> Response:
        limit = int_param(req.query, "limit", 25, 1, 100)
        groups = self.store.groups()
        cursor = req.query.get("cursor") or None
        start = 0
        if cursor:
            ids = [g["id"] for g in groups]
            last = decode_cursor(cursor)
            if last not in ids:
                raise bad_cursor()
            start = ids.index(last) + 1
        page = groups[start : start + limit]
        next_cursor = encode_cursor(page[-1]["id"]) if page else cursor
        return Response(
            200,
            {
                "data": page,
                "pagination": {
                    "cursor": next_cursor,
                    "hasMore": start + limit < len(groups),
                    "pageSize": limit,
                },
            },
        )
