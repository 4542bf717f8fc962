"""The retry loop: what is retried, how long it sleeps, and the bounds."""

from __future__ import annotations

import httpx
import pytest

from erzy_pipelines.erzycall import RetryPolicy, call_with_retries, errors

from ._fakes import FakeClock, Script, api_response, contact_json, error_body, make_client


def test_full_jitter_exponential_backoff_is_capped():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert [policy.backoff(n, 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.backoff(3, 0.25) == 0.5
    assert policy.backoff(3, 0.0) == 0.0


def test_5xx_backs_off_then_succeeds():
    clock = FakeClock()
    script = Script(
        api_response(500, error_body("INTERNAL_ERROR")),
        api_response(502, None),
        httpx.ReadTimeout("slow"),
        api_response(200, {"data": contact_json()}),
    )
    client = make_client(script, clock, retry=RetryPolicy(base_delay=1.0, max_delay=30.0))
    contact = client.get_contact("contact_1")
    assert contact.id == "contact_1"
    assert clock.sleeps == [1.0, 2.0, 4.0]  # jitter pinned to 1.0
    assert client.last_attempts == 4 and client.requests_sent == 4


def test_jitter_spreads_the_delay():
    clock = FakeClock()
    script = Script(api_response(503, None), api_response(200, {"data": contact_json()}))
    client = make_client(script, clock, retry=RetryPolicy(base_delay=2.0), jitter=0.3)
    client.get_contact("contact_1")
    assert clock.sleeps == [pytest.approx(0.6)]


def test_429_waits_exactly_retry_after():
    clock = FakeClock()
    script = Script(
        api_response(429, error_body("RATE_LIMITED"), {"Retry-After": "7"}),
        api_response(200, {"data": contact_json()}),
    )
    client = make_client(script, clock)
    client.get_contact("contact_1")
    assert clock.sleeps == [7.0]
    assert client.last_attempts == 2


def test_429_without_retry_after_falls_back_to_backoff():
    clock = FakeClock()
    script = Script(api_response(429, None), api_response(200, {"data": contact_json()}))
    client = make_client(script, clock, retry=RetryPolicy(base_delay=0.5))
    client.get_contact("contact_1")
    assert clock.sleeps == [0.5]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_never_retried(status):
    clock = FakeClock()
    script = Script(api_response(status, error_body("X")), api_response(200, {"data": {}}))
    client = make_client(script, clock)
    with pytest.raises(errors.ErzyCallError) as info:
        client.create_contact({"title": "A", "phone": "+14155551234"}, idempotency_key="k1")
    assert info.value.attempts == 1 and len(script.requests) == 1 and clock.sleeps == []


def test_attempts_are_bounded():
    clock = FakeClock()
    script = Script(api_response(500, None))
    client = make_client(script, clock, retry=RetryPolicy(max_attempts=3, max_total_wait=1e9))
    with pytest.raises(errors.ServerError) as info:
        client.get_contact("contact_1")
    assert info.value.attempts == 3 and len(script.requests) == 3 and len(clock.sleeps) == 2


def test_total_wait_is_bounded_even_with_attempts_left():
    clock = FakeClock()
    script = Script(api_response(429, error_body("RATE_LIMITED"), {"Retry-After": "20"}))
    client = make_client(script, clock, retry=RetryPolicy(max_attempts=100, max_total_wait=50.0))
    with pytest.raises(errors.RateLimitedError) as info:
        client.get_contact("contact_1")
    # 20 + 20 = 40 s slept; a third 20 s wait would exceed 50 s, so it gives up at attempt 3.
    assert clock.sleeps == [20.0, 20.0]
    assert info.value.attempts == 3 and "after 3 attempts" in str(info.value)


def test_a_retry_after_longer_than_the_budget_fails_fast():
    clock = FakeClock()
    script = Script(api_response(429, error_body("RATE_LIMITED"), {"Retry-After": "3600"}))
    client = make_client(script, clock, retry=RetryPolicy(max_total_wait=300.0))
    with pytest.raises(errors.RateLimitedError):
        client.get_contact("contact_1")
    assert clock.sleeps == [] and len(script.requests) == 1


def test_writes_resend_the_same_key_and_bytes_on_every_retry():
    clock = FakeClock()
    script = Script(
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        api_response(500, None),
        httpx.ReadTimeout("timed out"),
        api_response(201, {"data": contact_json()}),
    )
    client = make_client(script, clock)
    client.create_contact({"title": "Ada", "phone": "+14155551234", "tags": ["é"]}, "create-1")
    assert len(script.requests) == 4
    assert {r.headers["Idempotency-Key"] for r in script.requests} == {"create-1"}
    assert len({r.content for r in script.requests}) == 1
    assert client.last_attempts == 4


def test_delete_404_after_a_lost_response_counts_as_deleted():
    clock = FakeClock()
    script = Script(
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        api_response(404, error_body("NOT_FOUND")),
    )
    client = make_client(script, clock)
    assert client.delete_contact("contact_1", "del-1") is None
    assert client.last_attempts == 2
    # Without a lost response first, a 404 is a real 404.
    with pytest.raises(errors.NotFoundError):
        make_client(Script(api_response(404, error_body("NOT_FOUND"))), clock).delete_contact(
            "contact_1", "del-2"
        )


def test_call_with_retries_reports_attempts_and_ignores_other_exceptions():
    calls = []

    def flaky(n: int) -> str:
        calls.append(n)
        if n < 3:
            raise errors.ServerError("down", 500)
        return "ok"

    clock = FakeClock()
    assert call_with_retries(flaky, RetryPolicy(), sleep=clock.sleep, jitter=lambda: 0.0) == (
        "ok", 3)

    def broken(n: int) -> str:
        raise KeyError("a bug is not retried")

    with pytest.raises(KeyError):
        call_with_retries(broken, RetryPolicy(), sleep=clock.sleep, jitter=lambda: 0.0)
    assert calls == [1, 2, 3]
