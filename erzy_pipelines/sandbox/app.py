"""The sandbox API's behaviour, independent of sockets: ``SandboxApp.handle(Request)``.

Order of a ``/api/v1`` request: latency fault → ``burst_429`` fault → ``proxy_404`` fault → key
check (401) → rate limit (429) → ``error_rate`` fault (500) → route (404/405) → scope (403) → the
route itself → ``lose_response_rate`` fault. Every ``/api/v1`` response carries the
``X-RateLimit-*`` headers.

Choices where the docs say [unknown] (see also ratelimit, validation and store):

* Idempotency: a key is scoped to the API key + method + path, so one ``Idempotency-Key`` on two
  different paths is two records. POST, PATCH and DELETE honour it. Only successful (2xx)
  outcomes are kept, for ``idempotency_ttl`` seconds (default 24 h): a replay with the same body
  (compared as canonical JSON, so key order and whitespace do not matter) answers the original
  status and body (a snapshot, even if the contact changed since) with ``Idempotent-Replayed:
  true`` and writes nothing; a different body answers 409 ``IDEMPOTENCY_MISMATCH``. A 4xx is not
  kept, so a retry after fixing the data is judged afresh.
* Pagination: ``cursor`` is the URL-safe base64 (unpadded) of the last id on the page; it never
  expires (deleted contacts leave tombstones). A malformed or unknown cursor is 400
  ``VALIDATION_ERROR`` on ``cursor``. Every non-empty page carries a cursor, the last one too;
  ``hasMore`` says whether another page exists. ``pageSize`` echoes ``limit``.
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

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from .config import SCOPES, KeySpec, SandboxConfig, key_hash
from .errors import ApiError, not_found, validation_error
from .faults import FaultInjector, Faults
from .ratelimit import SlidingWindowLimiter
from .store import ContactStore, PhoneTaken
from .validation import CONTACT_ID_RE, check_contact_id, int_param, validate_contact

API_PREFIX = "/api/v1"
ADMIN_PREFIX = "/_sandbox"
WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE"})
IDEMPOTENCY_KEY_MAX = 255


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    raw_query: str = ""


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    lose: bool = False


@dataclass(frozen=True)
class RequestRecord:
    """One ``/api/v1`` request as the server saw it. ``key_hash`` never reveals the key."""

    method: str
    path: str
    status: int
    at: float
    key_hash: str | None
    query: str = ""
    lost: bool = False
    idempotency_key: str | None = None
    body: str = ""  # the request body as sent, so tests can check what a PATCH carried


def _error(exc: ApiError) -> Response:
    return Response(exc.status, exc.body(), dict(exc.headers))


def encode_cursor(item_id: str) -> str:
    return base64.urlsafe_b64encode(item_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_cursor() from None


def _bad_cursor() -> ApiError:
    return validation_error([{"field": "cursor", "message": "invalid or unknown cursor"}])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise ApiError(400, "INVALID_JSON", "Request body is empty; send a JSON object.")
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "INVALID_JSON", "Request body is not valid JSON.") from None


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def matches_search(contact: Mapping[str, Any], term: str) -> bool:
    term = term.strip()
    if not term:
        return True
    if term.casefold() in contact["title"].casefold():
        return True
    digits = "".join(ch for ch in term if ch not in "+ -.()")
    return digits.isdigit() and digits in contact["phone"]


class SandboxApp:
    """State and routes of one sandbox instance. Thread safe."""

    def __init__(self, cfg: SandboxConfig) -> None:
        self.cfg = cfg
        self.store = ContactStore(cfg.db_path, tuple(cfg.groups))
        self.limiter = SlidingWindowLimiter(tuple(cfg.limits))
        self.injector = FaultInjector(Faults(), cfg.seed)
        self._keys = {k: replace(v, scopes=tuple(v.scopes)) for k, v in cfg.keys.items()}
        self._lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._counters = {"writes": 0, "rate_limited": 0, "lost_responses": 0, "replays": 0}
        self._by_status: dict[int, int] = {}

    # -- operator surface -----------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self.injector.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.injector.faults = value

    def add_key(
        self,
        key: str,
        scopes: tuple[str, ...] | list[str] = ("*",),
        expires_at: float | None = None,
    ) -> None:
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scope(s) {unknown}; known: {SCOPES}")
        with self._lock:
            self._keys[key] = KeySpec(scopes=tuple(scopes), expires_at=expires_at)

    def _key_spec(self, key: str) -> KeySpec:
        spec = self._keys.get(key)
        if spec is None:
            raise KeyError("no such API key")  # never echo the key itself
        return spec

    def revoke_key(self, key: str) -> None:
        with self._lock:
            self._key_spec(key).revoked = True

    def expire_key(self, key: str) -> None:
        with self._lock:
            self._key_spec(key).expired = True

    def request_log(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": len(self._log),
                **self._counters,
                "by_status": dict(sorted(self._by_status.items())),
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._log.clear()
            self._by_status.clear()
            for name in self._counters:
                self._counters[name] = 0

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] += 1

    def add_contact_direct(self, contact: Mapping[str, Any]) -> dict[str, Any]:
        """Store an API-shaped contact without the API (no validation, no limits, no log).

        The only way to set ``optedOut``. Raises ValueError on a taken phone or id.
        """
        fields = {k: contact[k] for k in ("title", "phone") if k in contact}
        for k in ("email", "notes", "tags", "groupIds", "customFields"):
            if contact.get(k) is not None:
                fields[k] = contact[k]
        if "title" not in fields or "phone" not in fields:
            raise ValueError("a contact needs at least title and phone")
        try:
            return self.store.create(
                fields,
                contact_id=contact.get("id"),
                created_at=contact.get("createdAt"),
                opted_out=bool(contact.get("optedOut", False)),
            )
        except PhoneTaken:
            raise ValueError("a contact with this phone already exists") from None

    # -- entry point ----------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        path = req.path.rstrip("/") or "/"
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            try:
                return self._admin(req, path[len(ADMIN_PREFIX) :])
            except ApiError as exc:
                return _error(exc)
        if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
            return _error(not_found("Route"))
        raw_key = (req.headers.get("X-API-Key") or "").strip()
        hashed = key_hash(raw_key)
        resp = self._api(req, path[len(API_PREFIX) :], raw_key, hashed)
        with self._lock:
            self._log.append(
                RequestRecord(
                    req.method,
                    req.path,
                    resp.status,
                    time.time(),
                    hashed,
                    req.raw_query,
                    resp.lose,
                    req.headers.get("Idempotency-Key"),
                    req.body.decode("utf-8", "replace"),
                )
            )
            self._by_status[resp.status] = self._by_status.get(resp.status, 0) + 1
            if resp.status == 429:
                self._counters["rate_limited"] += 1
            if resp.lose:
                self._counters["lost_responses"] += 1
        return resp

    def _api(self, req: Request, sub: str, raw_key: str, hashed: str | None) -> Response:
        delay = self.injector.latency()
        if delay:
            time.sleep(delay)
        bucket = hashed or "-"
        if self.injector.take_burst():
            decision = self.limiter.blocked(1.0)
            return _error(
                ApiError(429, "RATE_LIMITED", "Rate limit exceeded.", headers=decision.headers())
            )
        if self.injector.take_proxy_404():
            return Response(404, {"message": "no upstream for this path (proxy)"})
        try:
            spec = self._authenticate(raw_key)
        except ApiError as exc:
            resp = _error(exc)
            resp.headers.update(self.limiter.peek(bucket).headers())
            return resp
        decision = self.limiter.check(bucket)
        if not decision.allowed:
            return _error(
                ApiError(
                    429,
                    "RATE_LIMITED",
                    f"Rate limit exceeded. Retry after {decision.retry_after} seconds.",
                    headers=decision.headers(),
                )
            )
        rate_headers = decision.headers()
        if self.injector.server_error():
            resp = _error(ApiError(500, "INTERNAL_ERROR", "Internal server error (injected)."))
        else:
            try:
                route, scope, args = self._route(req.method, sub)
                if not spec.allows(scope):
                    raise ApiError(
                        403,
                        "INSUFFICIENT_SCOPE",
                        f"This API key lacks the required scope: {scope}.",
                    )
                resp = route(req, hashed or "-", *args)
            except ApiError as exc:
                resp = _error(exc)
            if req.method in WRITE_METHODS and self.injector.lose_response():
                resp.lose = True
        resp.headers.update(rate_headers)
        return resp

    def _authenticate(self, raw_key: str) -> KeySpec:
        if not raw_key:
            raise ApiError(401, "UNAUTHORIZED", "Missing API key; send it in the X-API-Key header.")
        with self._lock:
            spec = self._keys.get(raw_key)
            if spec is None:
                raise ApiError(401, "UNAUTHORIZED", "Invalid API key.")
            if spec.revoked:
                raise ApiError(401, "KEY_REVOKED", "This API key has been revoked.")
            if spec.is_expired():
                raise ApiError(401, "KEY_EXPIRED", "This API key has expired.")
            return replace(spec)

    def _route(self, method: str, sub: str) -> tuple[Callable[..., Response], str, tuple[str, ...]]:
        parts = [unquote(p) for p in sub.strip("/").split("/")] if sub.strip("/") else []
        table: dict[str, tuple[Callable[..., Response], str]]
        args: tuple[str, ...] = ()
        if parts == ["contacts"]:
            table = {
                "GET": (self._list_contacts, "contacts:read"),
                "POST": (self._create_contact, "contacts:write"),
            }
        elif parts == ["contacts", "search"]:
            table = {"GET": (self._search_contacts, "contacts:read")}
        elif len(parts) == 2 and parts[0] == "contacts":
            table = {
                "GET": (self._get_contact, "contacts:read"),
                "PATCH": (self._patch_contact, "contacts:write"),
                "DELETE": (self._delete_contact, "contacts:write"),
            }
            args = (parts[1],)
        elif parts == ["contact-groups"]:
            table = {"GET": (self._list_groups, "contact_groups:read")}
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

    # -- idempotency ----------------------------------------------------------------------
    def _idempotent(
        self, req: Request, bucket: str, fingerprint: str, action: Callable[[], Response]
    ) -> Response:
        idem = req.headers.get("Idempotency-Key")
        if idem is None:
            with self.store.lock:
                return action()
        if not idem.strip() or len(idem) > IDEMPOTENCY_KEY_MAX:
            raise validation_error(
                [{"field": "Idempotency-Key", "message": f"must be 1-{IDEMPOTENCY_KEY_MAX} chars"}]
            )
        scope = "\x1f".join((bucket, req.method, req.path.rstrip("/"), idem))
        now = time.time()
        with self.store.lock:
            found = self.store.idempotent_result(scope, now, self.cfg.idempotency_ttl)
            if found is not None:
                stored_fp, status, body = found
                if stored_fp != fingerprint:
                    raise ApiError(
                        409,
                        "IDEMPOTENCY_MISMATCH",
                        "This Idempotency-Key was already used with a different request body.",
                    )
                self._count("replays")
                return Response(status, body, {"Idempotent-Replayed": "true"})
            resp = action()
            if 200 <= resp.status < 300:
                self.store.remember(scope, fingerprint, resp.status, resp.body, now)
            return resp

    # -- routes ---------------------------------------------------------------------------
    def _list_contacts(self, req: Request, bucket: str) -> Response:
        q = req.query
        limit = int_param(q, "limit", 25, 1, 100)
        cursor = q.get("cursor") or None
        after = 0
        if cursor:
            last_id = decode_cursor(cursor)
            seq = self.store.seq_of(last_id) if CONTACT_ID_RE.match(last_id) else None
            if seq is None:
                raise _bad_cursor()
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

    def _search_contacts(self, req: Request, bucket: str) -> Response:
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

    def _create_contact(self, req: Request, bucket: str) -> Response:
        body = parse_json(req.body)

        def action() -> Response:
            fields = validate_contact(body, partial=False, groups=self.store.group_ids)
            try:
                contact = self.store.create(fields)
            except PhoneTaken:
                raise ApiError(
                    409, "CONFLICT", "A contact with this phone number already exists."
                ) from None
            self._count("writes")
            return Response(201, {"data": contact})

        return self._idempotent(req, bucket, canonical(body), action)

    def _get_contact(self, req: Request, bucket: str, contact_id: str) -> Response:
        contact = self.store.get(check_contact_id(contact_id))
        if contact is None:
            raise not_found("Contact")
        return Response(200, {"data": contact})

    def _patch_contact(self, req: Request, bucket: str, contact_id: str) -> Response:
        check_contact_id(contact_id)
        body = parse_json(req.body)

        def action() -> Response:
            changes = validate_contact(body, partial=True, groups=self.store.group_ids)
            try:
                contact = self.store.update(contact_id, changes)
            except PhoneTaken:
                raise ApiError(
                    409, "CONFLICT", "A contact with this phone number already exists."
                ) from None
            if contact is None:
                raise not_found("Contact")
            self._count("writes")
            return Response(200, {"data": contact})

        return self._idempotent(req, bucket, canonical(body), action)

    def _delete_contact(self, req: Request, bucket: str, contact_id: str) -> Response:
        check_contact_id(contact_id)

        def action() -> Response:
            if not self.store.delete(contact_id):
                raise not_found("Contact")
            self._count("writes")
            return Response(204)

        return self._idempotent(req, bucket, "", action)

    def _list_groups(self, req: Request, bucket: str) -> Response:
        limit = int_param(req.query, "limit", 25, 1, 100)
        groups = self.store.groups()
        cursor = req.query.get("cursor") or None
        start = 0
        if cursor:
            ids = [g["id"] for g in groups]
            last = decode_cursor(cursor)
            if last not in ids:
                raise _bad_cursor()
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

    # -- admin ----------------------------------------------------------------------------
    def _admin(self, req: Request, sub: str) -> Response:
        """Operator endpoints: no key, no rate limit, not logged, no faults."""
        route = (req.method, sub)
        if route == ("GET", "/stats"):
            return Response(200, self.stats())
        if route == ("GET", "/faults"):
            return Response(200, self.faults.as_dict())
        if route == ("POST", "/faults"):
            values = parse_json(req.body)
            if not isinstance(values, dict):
                raise validation_error([{"field": "body", "message": "must be a JSON object"}])
            try:
                self.faults.update(values)
            except ValueError as exc:
                raise validation_error([{"field": "body", "message": str(exc)}]) from None
            return Response(200, self.faults.as_dict())
        if route == ("POST", "/reset-stats"):
            self.reset_stats()
            return Response(200, self.stats())
        if route == ("GET", "/contacts"):
            return Response(200, {"data": self.store.all()})
        raise not_found("Route")
