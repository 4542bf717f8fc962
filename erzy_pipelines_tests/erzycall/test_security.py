"""The key never leaks (repr, exceptions, logs) and plain http is refused off-loopback."""

from __future__ import annotations

import logging
import pickle

import httpx
import pytest

from erzy_pipelines.erzycall import ErzyCallClient, Secret, errors, validate_base_url

from ._fakes import KEY, FakeClock, Script, api_response, contact_json, error_body, make_client


def test_secret_repr_shows_only_the_prefix():
    secret = Secret(KEY)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert KEY not in text
    assert repr(secret) == "ek_test_…(redacted)"
    assert repr(Secret("ek_live_abcdef")) == "ek_live_…(redacted)"
    assert repr(Secret("someone-elses-format")) == "…(redacted)"
    assert secret.reveal() == KEY and secret == Secret(KEY) and secret != Secret(KEY + "x")
    assert KEY not in secret.fingerprint()


@pytest.mark.parametrize("bad", ["", "   ", "ek_test_a\r\nX-Evil: 1", "ek_test_ a"])
def test_secret_rejects_values_that_would_break_the_header(bad):
    with pytest.raises(ValueError) as info:
        Secret(bad)
    assert "ek_test" not in str(info.value)


def test_client_repr_is_redacted():
    client = make_client(Script(api_response(200, {})), FakeClock())
    assert KEY not in repr(client) and "(redacted)" in repr(client)
    assert KEY not in repr(client.__dict__)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000/api/v1", "http://127.5.6.7/api/v1", "http://localhost:1/api/v1",
     "http://[::1]:8080/api/v1", "https://app.erzycall.com/api/v1/"],
)
def test_loopback_http_and_https_are_allowed(url):
    assert validate_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    ["http://app.erzycall.com/api/v1", "http://10.0.0.5/api/v1", "http://localhost.evil.com/x",
     "http://128.0.0.1/api"],
)
def test_plain_http_to_other_hosts_is_refused(url):
    with pytest.raises(ValueError, match="refusing plain http"):
        ErzyCallClient(KEY, url)
    with pytest.raises(ValueError) as info:
        ErzyCallClient(KEY, url)
    assert KEY not in str(info.value)
    # ... unless the caller says so explicitly.
    client = ErzyCallClient(KEY, url, allow_insecure_http=True)
    assert client.base_url == url
    client.close()


@pytest.mark.parametrize(
    "url", ["ftp://x/api", "https://user:pw@app.erzycall.com/api/v1", "https://x/api?k=1", "/api"]
)
def test_malformed_base_urls_are_refused(url):
    with pytest.raises(ValueError):
        validate_base_url(url)


def test_key_travels_only_in_the_header():
    script = Script(api_response(200, {"data": contact_json()}))
    client = make_client(script, FakeClock())
    client.get_contact("contact_1")
    request = script.requests[0]
    assert request.headers["X-API-Key"] == KEY
    assert KEY not in str(request.url)
    assert request.url.scheme == "https"


def test_no_log_line_and_no_exception_contains_the_key(caplog):
    caplog.set_level(logging.DEBUG)  # every logger, httpx/httpcore included
    clock = FakeClock()
    script = Script(
        httpx.ConnectError(f"refused while sending {KEY}"),  # a transport error echoing it
        api_response(500, error_body("INTERNAL_ERROR", f"trace: X-API-Key={KEY}")),
        api_response(401, error_body("KEY_REVOKED", f"key {KEY} was revoked")),
    )
    client = make_client(script, clock)
    with pytest.raises(errors.AuthenticationError) as info:
        client.find_contact_by_phone("+14155551234")
    err = info.value
    assert err.attempts == 3
    for text in (str(err), repr(err), repr(err.__dict__), str(pickle.loads(pickle.dumps(err)))):
        assert KEY not in text
    assert caplog.records, "expected debug/info logs"
    for record in caplog.records:
        assert KEY not in record.getMessage()


def test_transport_error_messages_are_scrubbed():
    script = Script(httpx.ConnectError(f"could not send {KEY}"))
    client = make_client(script, FakeClock())
    with pytest.raises(errors.TransportError) as info:
        client.get_contact("contact_1")
    assert KEY not in str(info.value) and "(redacted)" in str(info.value)


def test_phone_numbers_are_masked_in_logs(caplog):
    caplog.set_level(logging.DEBUG, logger="erzy_pipelines.erzycall")
    script = Script(
        api_response(503, None),
        api_response(200, {"data": [], "pagination": {"hasMore": False}}),
    )
    client = make_client(script, FakeClock())
    assert client.find_contact_by_phone("+14155551234") is None
    lines = [r.getMessage() for r in caplog.records if r.name == "erzy_pipelines.erzycall"]
    assert lines
    assert not any("+14155551234" in line or "4155551234" in line for line in lines)
    assert any("+1415*****34" in line for line in lines)
    # The error path never carries the query string (where the phone was).
    assert all("search" not in r.getMessage() or "*" in r.getMessage() for r in caplog.records)
