"""The sandbox API's behaviour, independent of sockets: ``SandboxApp.handle(Request)``.

Order of a ``/api/v1`` request: latency fault → ``burst_429`` fault → ``proxy_404`` fault → key
check (401) → rate limit (429) → ``error_rate`` fault (500) → route (404/405) → scope (403) → the
route itself → ``lose_response_rate`` fault. Every ``/api/v1`` response carries the
``X-RateLimit-*`` headers.

This module is that pipeline plus the operator surface (keys, stats, the request log). What each
route does is in ``routes``, idempotent writes in ``idempotency``, the ``/_sandbox`` endpoints in
``admin``, and the request/response types in ``messages`` (re-exported here, where the server has
always imported them). Choices where the docs say [unknown] are documented in the module that
implements them (routes, idempotency, messages, ratelimit, validation and store).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .admin import ADMIN_PREFIX, admin_response
from .api_errors import ApiError, not_found
from .config import SCOPES, KeySpec, SandboxConfig, key_hash
from .contacts_db import ContactStore, PhoneTaken
from .faults import FaultInjector, Faults
from .idempotency import Idempotency
from .limits import SlidingWindowLimiter
from .messages import Request, RequestRecord, Response, error_response
from .routes import ApiRoutes

__all__ = [
    "ADMIN_PREFIX",
    "API_PREFIX",
    "WRITE_METHODS",
    "Request",
    "RequestRecord",
    "Response",
    "SandboxApp",
]

API_PREFIX = "/api/v1"
WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE"})


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
        self.idempotency = Idempotency(self.store, cfg, lambda: self._count("replays"))
        self.routes = ApiRoutes(self.store, self.idempotency, self._count)

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
                return admin_response(self, req, path[len(ADMIN_PREFIX) :])
            except ApiError as exc:
                return error_response(exc)
        if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
            return error_response(not_found("Route"))
        raw_key = (req.headers.get("X-API-Key") or "").strip()
        hashed = key_hash(raw_key)
        resp = self._api(req, path[len(API_PREFIX) :], raw_key, hashed)
        self._record(req, resp, hashed)
        return resp

    def _record(self, req: Request, resp: Response, hashed: str | None) -> None:
        """Log an ``/api/v1`` request and count its outcome."""
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

    def _api(self, req: Request, sub: str, raw_key: str, hashed: str | None) -> Response:
        delay = self.injector.latency()
        if delay:
            time.sleep(delay)
        bucket = hashed or "-"
        if self.injector.take_burst():
            decision = self.limiter.blocked(1.0)
            return error_response(
                ApiError(429, "RATE_LIMITED", "Rate limit exceeded.", headers=decision.headers())
            )
        if self.injector.take_proxy_404():
            return Response(404, {"message": "no upstream for this path (proxy)"})
        try:
            spec = self._authenticate(raw_key)
        except ApiError as exc:
            resp = error_response(exc)
            resp.headers.update(self.limiter.peek(bucket).headers())
            return resp
        decision = self.limiter.check(bucket)
        if not decision.allowed:
            return error_response(
                ApiError(
                    429,
                    "RATE_LIMITED",
                    f"Rate limit exceeded. Retry after {decision.retry_after} seconds.",
                    headers=decision.headers(),
                )
            )
        rate_headers = decision.headers()
        if self.injector.server_error():
            resp = error_response(
                ApiError(500, "INTERNAL_ERROR", "Internal server error (injected).")
            )
        else:
            resp = self._dispatch(req, sub, spec, bucket)
            if req.method in WRITE_METHODS and self.injector.lose_response():
                resp.lose = True
        resp.headers.update(rate_headers)
        return resp

    def _dispatch(self, req: Request, sub: str, spec: KeySpec, bucket: str) -> Response:
        """Route (404/405), check the key's scope (403), then run the route."""
        try:
            route, scope, args = self.routes.route(req.method, sub)
            if not spec.allows(scope):
                raise ApiError(
                    403,
                    "INSUFFICIENT_SCOPE",
                    f"This API key lacks the required scope: {scope}.",
                )
            return route(req, bucket, *args)
        except ApiError as exc:
            return error_response(exc)

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
