"""One exception hierarchy for the ErzyCall API and the one function that maps responses to it.

Errors carry the HTTP method, the path (never the query string, which may hold a phone number)
and the server's code/message/details. They never carry headers, the request or the response
object, so the API key cannot leak through an exception or its traceback.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_MAX_MESSAGE = 500


class ErzyCallError(Exception):
    """Base class of every error the client raises.

    ``attempts`` is how many HTTP attempts the call made before giving up (set by the retry loop).
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        details: Sequence[Mapping[str, Any]] = (),
        attempts: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details: list[dict[str, Any]] = [dict(d) for d in details]
        self.attempts = attempts
        self.method = method
        self.path = path
        self.request_id = request_id

    @property
    def fatal_for_run(self) -> bool:
        """True when no later request can succeed either (bad key, missing scope): stop the run."""
        return self.status in (401, 403)

    def __str__(self) -> str:
        parts = []
        if self.method and self.path:
            parts.append(f"{self.method} {self.path}")
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(self.code)
        head = " ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.details:
            fields = ", ".join(f"{d.get('field')}: {d.get('message')}" for d in self.details)
            text += f" [{fields}]"
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts)"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"method={self.method!r}, path={self.path!r}, attempts={self.attempts})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps exceptions picklable (e.g. across process boundaries) with all their fields.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[ErzyCallError], state: dict[str, Any]) -> ErzyCallError:
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class TransportError(ErzyCallError):
    """No HTTP response: connection refused or dropped, timeout, TLS failure.

    For a write the outcome is unknown; retrying with the same Idempotency-Key is safe.
    """

    retryable = True


class UnexpectedResponseError(ErzyCallError):
    """A 2xx response that does not have the documented shape."""


class AuthenticationError(ErzyCallError):
    """401: missing, unknown, expired or revoked key."""


class PermissionDeniedError(ErzyCallError):
    """403: the key lacks a scope."""


class NotFoundError(ErzyCallError):
    """404: missing, or belongs to another organization."""

    @property
    def from_the_api(self) -> bool:
        """The API's own answer (its error envelope with code ``NOT_FOUND``): the thing is not
        there. A 404 without it (a proxy's page, a wrong base path) says nothing about it."""
        return self.status == 404 and self.code == "NOT_FOUND"


class ConflictError(ErzyCallError):
    """409 CONFLICT: a contact with this phone already exists (the body does not name it)."""


class IdempotencyMismatchError(ErzyCallError):
    """409 IDEMPOTENCY_MISMATCH: an idempotency key was reused with a different body (our bug).

    Deliberately not a ConflictError: resolving it by phone lookup would hide the bug.
    """


class ValidationError(ErzyCallError):
    """400: VALIDATION_ERROR, INVALID_JSON, INVALID_ID or another bad-request code."""


class UnprocessableError(ErzyCallError):
    """422: a valid request that cannot be carried out."""


class RateLimitedError(ErzyCallError):
    """429: retried after ``retry_after`` seconds (None when the header is missing)."""

    retryable = True

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(ErzyCallError):
    """5xx: server failure; retried with backoff."""

    retryable = True


class RateLimitTimeoutError(ErzyCallError):
    """The local rate limiter would have to wait longer than the caller allowed."""

    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message)
        self.wait = wait


_BY_CODE: dict[str, type[ErzyCallError]] = {
    "VALIDATION_ERROR": ValidationError,
    "INVALID_JSON": ValidationError,
    "INVALID_ID": ValidationError,
    "UNAUTHORIZED": AuthenticationError,
    "KEY_EXPIRED": AuthenticationError,
    "KEY_REVOKED": AuthenticationError,
    "INSUFFICIENT_SCOPE": PermissionDeniedError,
    "NOT_FOUND": NotFoundError,
    "CONFLICT": ConflictError,
    "IDEMPOTENCY_MISMATCH": IdempotencyMismatchError,
    "RATE_LIMITED": RateLimitedError,
}

_BY_STATUS: dict[int, type[ErzyCallError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableError,
    429: RateLimitedError,
}


def error_class_for(status: int, code: str | None) -> type[ErzyCallError]:
    """The exception class for a status and error code: the code wins, then the status."""
    if code and code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return ServerError
    return ErzyCallError


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def error_from_response(
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
    *,
    method: str | None = None,
    path: str | None = None,
    redact: Iterable[str] = (),
) -> ErzyCallError:
    """Map an error response to the matching exception; the ONE place statuses become classes.

    ``body`` is the parsed JSON (or raw text/bytes); ``redact`` lists strings (the key) that must
    not survive into the message even if a server echoes them.
    """
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body) if body else None
        except ValueError:
            body = None
    envelope = body.get("error") if isinstance(body, dict) else None
    code = message = None
    details: list[dict[str, Any]] = []
    if isinstance(envelope, dict):
        code = envelope.get("code") if isinstance(envelope.get("code"), str) else None
        message = envelope.get("message") if isinstance(envelope.get("message"), str) else None
        raw_details = envelope.get("details")
        if isinstance(raw_details, list):
            details = [d for d in raw_details if isinstance(d, dict)]
    if not message:
        message = f"unexpected HTTP {status} response"
    secrets = [s for s in redact if s]
    message = _scrub(message[:_MAX_MESSAGE], secrets)
    details = [{k: _scrub(str(v), secrets) for k, v in d.items()} for d in details]
    cls = error_class_for(status, code)
    kwargs: dict[str, Any] = {
        "method": method,
        "path": path,
        "request_id": headers.get("x-request-id"),
    }
    if cls is RateLimitedError:
        kwargs["retry_after"] = parse_retry_after(headers.get("retry-after"))
    return cls(message, status, code, details, **kwargs)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "(redacted)")
    return text
