"""Status/code -> exception mapping, retryability and what an error may carry."""

from __future__ import annotations

import pickle
import socket

import httpx
import pytest

from erzy_pipelines.erzycall import ErzyCallClient, RetryPolicy, errors
from erzy_pipelines.erzycall.errors import error_from_response
from erzy_pipelines.sandbox import DEMO_API_KEY

from ._fakes import (
    KEY,
    FakeClock,
    Script,
    api_response,
    error_body,
    make_client,
    sandbox_client,
)

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


PERSON = {"title": "Ada", "phone": "+14155551234"}
OTHER_KEY = "ek_test_errors_other_key"


def _key(sandbox, scopes=("*",)):
    sandbox.add_key(OTHER_KEY, scopes=scopes)
    return OTHER_KEY


# How to get each answer out of the real sandbox: (sandbox) -> (key, call on the client, method,
# path). The client's fake clock makes the retries of 429 and 500 instant.
PROVOKE = {
    "VALIDATION_ERROR": lambda sb: (
        DEMO_API_KEY, lambda c: c.create_contact({"title": "", "phone": "+14155550100"}, "k"),
        "POST", "/contacts",
    ),
    "INVALID_JSON": lambda sb: (  # a NaN from a CRM: json.dumps writes it, JSON has no NaN
        DEMO_API_KEY, lambda c: c.create_contact({**PERSON, "notes": float("nan")}, "k"),
        "POST", "/contacts",
    ),
    "INVALID_ID": lambda sb: (
        DEMO_API_KEY, lambda c: c.get_contact("contact_UPPER"), "GET", "/contacts/contact_UPPER"
    ),
    "UNAUTHORIZED": lambda sb: (
        "ek_test_no_such_key", lambda c: c.get_contact("contact_1"), "GET", "/contacts/contact_1"
    ),
    "KEY_EXPIRED": lambda sb: (
        _key(sb), lambda c: (sb.expire_key(OTHER_KEY), c.get_contact("contact_1")),
        "GET", "/contacts/contact_1",
    ),
    "KEY_REVOKED": lambda sb: (
        _key(sb), lambda c: (sb.revoke_key(OTHER_KEY), c.get_contact("contact_1")),
        "GET", "/contacts/contact_1",
    ),
    "INSUFFICIENT_SCOPE": lambda sb: (
        _key(sb, ("contact_groups:read",)), lambda c: c.get_contact("contact_1"),
        "GET", "/contacts/contact_1",
    ),
    "NOT_FOUND": lambda sb: (
        DEMO_API_KEY, lambda c: c.get_contact("contact_1"), "GET", "/contacts/contact_1"
    ),
    "CONFLICT": lambda sb: (
        DEMO_API_KEY,
        lambda c: (sb.add_contact_direct(PERSON), c.create_contact({**PERSON, "title": "B"}, "k")),
        "POST", "/contacts",
    ),
    "IDEMPOTENCY_MISMATCH": lambda sb: (
        DEMO_API_KEY,
        lambda c: (c.create_contact(PERSON, "k"), c.create_contact({**PERSON, "title": "B"}, "k")),
        "POST", "/contacts",
    ),
    "RATE_LIMITED": lambda sb: (
        DEMO_API_KEY, lambda c: (setattr(sb.faults, "burst_429", 100), c.get_contact("contact_1")),
        "GET", "/contacts/contact_1",
    ),
    "INTERNAL_ERROR": lambda sb: (
        DEMO_API_KEY, lambda c: (setattr(sb.faults, "error_rate", 1.0), c.get_contact("contact_1")),
        "GET", "/contacts/contact_1",
    ),
}
SANDBOX_CASES = [case for case in CASES if case[1] in PROVOKE]
# Answers the sandbox never gives; only these stay on MockTransport.
MOCKED_CASES = [case for case in CASES if case[1] not in PROVOKE]


def test_every_case_is_provoked_or_knowingly_mocked():
    assert [c[1] for c in MOCKED_CASES] == [
        "INVALID_SOMETHING_NEW", "SOME_OTHER_CONFLICT", "CANNOT_DO_THAT", None, "TEAPOT"
    ]


@pytest.mark.parametrize(("status", "code", "cls", "retryable", "fatal"), SANDBOX_CASES)
def test_client_raises_the_mapped_class_with_attempts(sandbox, status, code, cls, retryable,
                                                      fatal):
    key, call, method, path = PROVOKE[code](sandbox)
    clock = FakeClock()
    client, spy = sandbox_client(sandbox, clock, key=key)
    sent_before = len(sandbox.request_log)
    with client, pytest.raises(cls) as info:
        call(client)
    err = info.value
    assert (type(err), err.status, err.code) == (cls, status, code)
    assert err.retryable is retryable and err.fatal_for_run is fatal
    # The policy allows 5 attempts, and 60 s of waiting: a 429 (Retry-After: 1) is the API
    # saying when to come back, so it is waited out until the wait budget ends, not 5 times.
    expected_attempts = (61 if status == 429 else 5) if retryable else 1
    failing = [r for r in sandbox.request_log[sent_before:] if r.status == status]
    assert err.attempts == expected_attempts == client.last_attempts == len(failing)
    assert spy.responses[-1].status_code == status
    assert err.method == method and err.path == path
    assert key not in str(err) and key not in repr(err)


@pytest.mark.parametrize(("status", "code", "cls", "retryable", "fatal"), MOCKED_CASES)
def test_client_raises_the_mapped_class_for_answers_only_a_mock_gives(status, code, cls,
                                                                      retryable, fatal):
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
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clock = FakeClock()
    client = ErzyCallClient(
        KEY, f"http://127.0.0.1:{port}/api/v1", retry=RetryPolicy(max_attempts=5),
        clock=clock, sleep=clock.sleep, jitter=lambda: 1.0,
    )
    with client, pytest.raises(errors.TransportError) as info:
        client.get_contact("contact_1")
    err = info.value
    assert err.retryable and err.attempts == 5 and len(clock.sleeps) == 4
    # httpx exceptions hold the request, whose headers hold the key: never chained.
    assert err.__cause__ is None and err.__suppress_context__
    assert KEY not in str(err) and "ConnectError" in str(err)
    assert client.requests_sent == 0  # a refused connection never reached the server
    assert client.last_attempts == 5


def test_non_json_success_is_an_unexpected_response():
    # Mocked: the sandbox always answers JSON.
    client = make_client(Script(httpx.Response(200, content=b"<html>")), FakeClock())
    with pytest.raises(errors.UnexpectedResponseError):
        client.get_contact("contact_1")
