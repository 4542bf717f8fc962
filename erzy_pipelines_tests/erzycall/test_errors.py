"""Status/code -> exception mapping, retryability and what an error may carry."""

from __future__ import annotations

import pickle

import httpx
import pytest

from erzy_pipelines.erzycall import errors
from erzy_pipelines.erzycall.errors import error_from_response

from ._fakes import KEY, FakeClock, Script, api_response, error_body, make_client

CASES = [
    (400, "VALIDATION_ERROR", errors.ValidationError, False, False),
    (400, "INVALID_JSON", errors.ValidationError, False, False),
    (400, "INVALID_ID", errors.ValidationError, False, False),
    (400, "INVALID_SOMETHING_NEW", errors.ValidationError, False, False),
    (401, "UNAUTHORIZED", errors.AuthenticationError, False, True),
    (401, "KEY_EXPIRED", errors.AuthenticationError, False, True),
    (401, "KEY_REVOKED", errors.AuthenticationError, False, True),
    (403, "INSUFFICIENT_SCOPE", errors.PermissionDeniedError, False, True),
    (404, "NOT_FOUND", errors.NotFoundError, False, False),
    (409, "CONFLICT", errors.ConflictError, False, False),
    (409, "IDEMPOTENCY_MISMATCH", errors.IdempotencyMismatchError, False, False),
    (409, "SOME_OTHER_CONFLICT", errors.ConflictError, False, False),
    (422, "CANNOT_DO_THAT", errors.UnprocessableError, False, False),
    (429, "RATE_LIMITED", errors.RateLimitedError, True, False),
    (500, "INTERNAL_ERROR", errors.ServerError, True, False),
    (503, None, errors.ServerError, True, False),
    (418, "TEAPOT", errors.ErzyCallError, False, False),
]


@pytest.mark.parametrize(("status", "code", "cls", "retryable", "fatal"), CASES)
def test_every_status_and_code_maps_to_one_class(status, code, cls, retryable, fatal):
    body = error_body(code, "it failed") if code else "<html>bad gateway</html>"
    err = error_from_response(status, body, {"Retry-After": "3"}, method="GET", path="/contacts")
    assert type(err) is cls
    assert isinstance(err, errors.ErzyCallError)
    assert (err.status, err.code) == (status, code)
    assert err.retryable is retryable
    assert err.fatal_for_run is fatal
    assert "GET /contacts" in str(err) and f"HTTP {status}" in str(err)


def test_idempotency_mismatch_is_not_a_conflict():
    # A ConflictError handler resolves by phone lookup; a mismatch is our bug and must not be.
    err = error_from_response(409, error_body("IDEMPOTENCY_MISMATCH"))
    assert not isinstance(err, errors.ConflictError)


def test_validation_details_and_retry_after_are_parsed():
    details = [{"field": "phone", "message": "must be E.164"}]
    err = error_from_response(400, error_body("VALIDATION_ERROR", "bad", details))
    assert err.details == details
    assert "phone: must be E.164" in str(err)
    limited = error_from_response(429, error_body("RATE_LIMITED"), {"Retry-After": "7"})
    assert limited.retry_after == 7.0
    assert error_from_response(429, None, {}).retry_after is None


def test_a_server_echoing_the_key_is_redacted():
    body = error_body("UNAUTHORIZED", f"key {KEY} is unknown", [{"field": "k", "message": KEY}])
    err = error_from_response(401, body, redact=(KEY,))
    assert KEY not in str(err) and KEY not in repr(err) and KEY not in repr(err.details)


def test_errors_pickle_with_their_fields():
    err = error_from_response(429, error_body("RATE_LIMITED"), {"Retry-After": "2"},
                              method="POST", path="/contacts")
    err.attempts = 3
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is errors.RateLimitedError
    assert (back.retry_after, back.attempts, back.path) == (2.0, 3, "/contacts")
    assert str(back) == str(err)


@pytest.mark.parametrize(("status", "code", "cls", "retryable", "fatal"), CASES)
def test_client_raises_the_mapped_class_with_attempts(status, code, cls, retryable, fatal):
    body = error_body(code, "nope") if code else None
    script = Script(api_response(status, body, {"Retry-After": "1"}))
    clock = FakeClock()
    client = make_client(script, clock)
    with pytest.raises(cls) as info:
        client.get_contact("contact_1")
    expected_attempts = 5 if retryable else 1  # the policy allows 5
    assert info.value.attempts == expected_attempts == len(script.requests)
    assert client.requests_sent == expected_attempts == client.last_attempts
    assert info.value.method == "GET" and info.value.path == "/contacts/contact_1"


def test_transport_errors_are_retryable_and_drop_the_httpx_chain():
    clock = FakeClock()
    script = Script(httpx.ConnectError("connection refused"))
    client = make_client(script, clock)
    with pytest.raises(errors.TransportError) as info:
        client.get_contact("contact_1")
    err = info.value
    assert err.retryable and err.attempts == 5
    # httpx exceptions hold the request, whose headers hold the key: never chained.
    assert err.__cause__ is None and err.__suppress_context__
    assert KEY not in str(err) and "ConnectError" in str(err)
    assert client.requests_sent == 0  # a refused connection never reached the server
    assert client.last_attempts == 5


def test_non_json_success_is_an_unexpected_response():
    client = make_client(Script(httpx.Response(200, content=b"<html>")), FakeClock())
    with pytest.raises(errors.UnexpectedResponseError):
        client.get_contact("contact_1")
