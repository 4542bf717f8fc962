"""ErzyCall Contacts API client: transport, retries, rate limiting, pagination, typed models.

No Dagster here; the sandbox server (a local fake of the API) lives in ``.sandbox``.
"""

from __future__ import annotations

from . import errors, models
from .client import DEFAULT_BASE_URL, DEFAULT_WINDOWS, ErzyCallClient
from .errors import (
    AuthenticationError,
    ConflictError,
    ErzyCallError,
    IdempotencyMismatchError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    RateLimitTimeoutError,
    ServerError,
    TransportError,
    UnexpectedResponseError,
    UnprocessableError,
    ValidationError,
    error_from_response,
)
from .logutil import mask_email, mask_emails, mask_phone, mask_phones, mask_pii
from .models import ContactGroup, Page, RemoteContact
from .pagination import CursorPaginator
from .ratelimit import InMemoryRateLimitStore, RateLimiter, RateLimitStore, wait_for_slot
from .retry import RetryPolicy, call_with_retries
from .secret import Secret
from .transport import validate_base_url

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_WINDOWS",
    "AuthenticationError",
    "ConflictError",
    "RemoteContact",
    "ContactGroup",
    "CursorPaginator",
    "ErzyCallClient",
    "ErzyCallError",
    "IdempotencyMismatchError",
    "InMemoryRateLimitStore",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "RateLimitStore",
    "RateLimitTimeoutError",
    "RateLimitedError",
    "RateLimiter",
    "RetryPolicy",
    "Secret",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "UnprocessableError",
    "ValidationError",
    "call_with_retries",
    "error_from_response",
    "errors",
    "mask_email",
    "mask_emails",
    "mask_phone",
    "mask_phones",
    "mask_pii",
    "models",
    "validate_base_url",
    "wait_for_slot",
]
