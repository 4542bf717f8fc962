"""ErzyCallClient: the Contacts API behind typed methods, rate limited and retried."""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from erzy_pipelines.core.budget import DEFAULT_WINDOWS

from .errors import (
    ErzyCallError,
    NotFoundError,
    TransportError,
    UnexpectedResponseError,
    error_from_response,
)
from .logutil import mask_pii
from .models import ContactGroup, Page, RemoteContact
from .pagination import CursorPaginator
from .ratelimit import RateLimiter
from .retry import RetryPolicy, call_with_retries
from .secret import Secret
from .transport import ApiResponse, Transport

logger = logging.getLogger("erzy_pipelines.erzycall")

DEFAULT_BASE_URL = "https://app.erzycall.com/api/v1"
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# Ids go into the URL path: anything but a plain token could change the path it addresses.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")
_MAX_IDEMPOTENCY_KEY = 255


class ErzyCallClient:
    """Synchronous client for the ErzyCall Contacts API.

    Every HTTP attempt takes a slot from ``limiter`` first and goes through the one retry loop.
    Writes require an ``idempotency_key``; the same key and the same serialized body are sent on
    every retry, so a retry after a lost response replays instead of writing twice.

    ``requests_sent`` counts HTTP requests actually sent (retries included); ``last_attempts``
    is how many attempts the calling thread's most recent call made (0 before any call); a
    raised error carries ``.attempts`` too. ``before_attempt``, if set, is called right before
    every attempt goes out (after the limiter's wait); an exception it raises stops the call
    before anything is sent.
    """

    def __init__(
        self,
        api_key: str | Secret,
        base_url: str = DEFAULT_BASE_URL,
        *,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        allow_insecure_http: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key = Secret(api_key)
        self._transport = Transport(
            self._key,
            base_url,
            timeout=timeout,
            allow_insecure_http=allow_insecure_http,
            http_transport=http_transport,
        )
        self.limiter = limiter if limiter is not None else RateLimiter(
            DEFAULT_WINDOWS, clock=clock, sleep=sleep
        )
        self.retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep
        self._jitter = jitter
        self._local = threading.local()
        self.before_attempt: Callable[[], None] | None = None

    # -- bookkeeping -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._transport.base_url

    @property
    def requests_sent(self) -> int:
        """HTTP requests actually sent by this client, retries included."""
        return self._transport.requests_sent

    @property
    def last_attempts(self) -> int:
        """Attempts the most recent call made on this thread (success or failure)."""
        return getattr(self._local, "attempts", 0)

    def __repr__(self) -> str:
        return f"ErzyCallClient(base_url={self.base_url!r}, api_key={self._key!r})"

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> ErzyCallClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one request path ----------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        tolerate_404_after_lost_response: bool = False,
    ) -> ApiResponse | None:
        # Serialized once: every retry must send byte-identical content with the same key.
        content = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        lost_response = False

        def attempt(number: int) -> ApiResponse | None:
            nonlocal lost_response
            self.limiter.acquire()
            if self.before_attempt is not None:
                self.before_attempt()
            try:
                resp = self._transport.send(
                    method, path, params=params, content=content, idempotency_key=idempotency_key
                )
            except TransportError:
                lost_response = True
                raise
            self.limiter.observe(resp.headers, resp.status)
            if resp.status < 300:
                return resp
            err = _error(resp, method, path, self._key)
            gone = isinstance(err, NotFoundError) and lost_response
            if gone and tolerate_404_after_lost_response:
                # An earlier attempt may have done the delete and lost the answer; the API may
                # not honour Idempotency-Key on DELETE, so "already gone" is the success we lost.
                logger.info("%s %s: 404 after a lost response, treating as done", method, path)
                return None
            raise err

        try:
            result, attempts = call_with_retries(
                attempt, self.retry, sleep=self._sleep, jitter=self._jitter,
                describe=f"{method} {path}",
            )
        except ErzyCallError as err:
            self._local.attempts = err.attempts
            logger.debug("%s %s failed after %d attempt(s): %s", method, path, err.attempts,
                         mask_pii(str(err)))
            raise
        self._local.attempts = attempts
        return result

    def _data(self, resp: ApiResponse | None) -> Any:
        if resp is None or not isinstance(resp.body, Mapping) or "data" not in resp.body:
            raise UnexpectedResponseError("response without a 'data' member")
        return resp.body["data"]

    # -- contacts ------------------------------------------------------------------------------

    def create_contact(self, payload: Mapping[str, Any], idempotency_key: str) -> RemoteContact:
        """POST /contacts. 409 CONFLICT raises ConflictError (resolve by find_contact_by_phone)."""
        _check_body(payload)
        resp = self._request(
            "POST", "/contacts", body=payload, idempotency_key=_check_key(idempotency_key)
        )
        return RemoteContact.from_api(self._data(resp))

    def update_contact(
        self, contact_id: str, fields: Mapping[str, Any], idempotency_key: str
    ) -> RemoteContact:
        """PATCH only ``fields``; tags/groupIds/customFields replace the whole value."""
        _check_body(fields)
        if not fields:
            raise ValueError("update_contact needs at least one field")
        resp = self._request(
            "PATCH",
            f"/contacts/{_check_id(contact_id)}",
            body=fields,
            idempotency_key=_check_key(idempotency_key),
        )
        return RemoteContact.from_api(self._data(resp))

    def delete_contact(self, contact_id: str, idempotency_key: str) -> None:
        """DELETE; a 404 that follows a lost response counts as deleted."""
        self._request(
            "DELETE",
            f"/contacts/{_check_id(contact_id)}",
            idempotency_key=_check_key(idempotency_key),
            tolerate_404_after_lost_response=True,
        )

    def get_contact(self, contact_id: str) -> RemoteContact:
        resp = self._request("GET", f"/contacts/{_check_id(contact_id)}")
        return RemoteContact.from_api(self._data(resp))

    def list_contact_pages(
        self,
        limit: int = 100,
        search: str | None = None,
        group_id: str | None = None,
        tags: str | Sequence[str] | None = None,
    ) -> Iterator[Page[RemoteContact]]:
        """Pages of GET /contacts, filters fixed for the whole scan (one request per page)."""
        return self._contact_paginator(limit, search, group_id, tags).pages()

    def list_contacts(
        self,
        limit: int = 100,
        search: str | None = None,
        group_id: str | None = None,
        tags: str | Sequence[str] | None = None,
    ) -> Iterator[RemoteContact]:
        """Every matching contact once (deduplicated by id); lazily, page by page."""
        return self._contact_paginator(limit, search, group_id, tags).items()

    def _contact_paginator(
        self,
        limit: int,
        search: str | None,
        group_id: str | None,
        tags: str | Sequence[str] | None,
    ) -> CursorPaginator[RemoteContact]:
        if not 1 <= limit <= 100:
            raise ValueError("limit must be 1..100")
        if tags is not None and not isinstance(tags, str):
            tags = ",".join(tags)
        params = {"limit": limit, "search": search, "groupId": group_id, "tags": tags or None}

        def fetch(p: dict[str, Any]) -> Page[RemoteContact]:
            return Page.from_api(self._request("GET", "/contacts", params=p).body,
                                 RemoteContact.from_api)

        return CursorPaginator(fetch, params, key=lambda c: c.id)

    def search_contacts(self, q: str, limit: int = 10) -> list[RemoteContact]:
        """GET /contacts/search (name or phone, not paginated)."""
        if len(q.strip()) < 2:
            raise ValueError("search query needs at least 2 characters")
        if not 1 <= limit <= 50:
            raise ValueError("limit must be 1..50")
        resp = self._request("GET", "/contacts/search", params={"q": q, "limit": limit})
        data = self._data(resp)
        if not isinstance(data, list):
            raise UnexpectedResponseError("search response 'data' is not an array")
        return [RemoteContact.from_api(item) for item in data]

    def find_contact_by_phone(self, e164: str) -> RemoteContact | None:
        """The contact whose phone is exactly ``e164``, or None.

        ``search`` matches substrings, so every candidate is checked for equality and the scan
        continues across pages until an exact match turns up.
        """
        if not _E164.match(e164):
            raise ValueError("phone must be E.164, e.g. +14155551234")
        for contact in self.list_contacts(limit=100, search=e164):
            if contact.phone == e164:
                return contact
        return None

    # -- contact groups ------------------------------------------------------------------------

    def list_contact_groups(self) -> list[ContactGroup]:
        """GET /contact-groups, all pages."""

        def fetch(p: dict[str, Any]) -> Page[ContactGroup]:
            return Page.from_api(self._request("GET", "/contact-groups", params=p).body,
                                 ContactGroup.from_api)

        return list(CursorPaginator(fetch, {}, key=lambda g: g.id).items())


def _error(resp: ApiResponse, method: str, path: str, key: Secret) -> ErzyCallError:
    return error_from_response(
        resp.status, resp.body, resp.headers, method=method, path=path, redact=(key.reveal(),)
    )


def _check_id(contact_id: str) -> str:
    if not isinstance(contact_id, str) or not _SAFE_ID.match(contact_id):
        raise ValueError(f"invalid id {contact_id!r}")
    return contact_id


def _check_key(idempotency_key: str) -> str:
    if (
        not isinstance(idempotency_key, str)
        or not idempotency_key
        or len(idempotency_key) > _MAX_IDEMPOTENCY_KEY
        or not idempotency_key.isprintable()
        or not idempotency_key.isascii()
    ):
        raise ValueError("idempotency_key must be 1..255 printable ASCII characters")
    return idempotency_key


def _check_body(body: Mapping[str, Any]) -> None:
    if not isinstance(body, Mapping):
        raise TypeError("body must be a mapping")
