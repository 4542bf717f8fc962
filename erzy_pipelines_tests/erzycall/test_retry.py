"""The retry loop: what is retried, how long it sleeps, and the bounds.

Every failure the sandbox can produce comes from the real sandbox over HTTP (faults switched per
attempt by ``FaultSteps``, whose fake clock makes backoff instant). ``MockTransport`` is kept
only for answers the sandbox never gives: a 429 without Retry-After, a 422, and a DELETE that
answers 404 after a lost response (the sandbox replays the stored 204 instead).
"""

from __future__ import annotations

import httpx
import pytest

from erzy_pipelines.erzycall import RetryPolicy, call_with_retries, errors

from ._fakes import (
    FakeClock,
    FaultSteps,
    Script,
    api_response,
    contact_json,
    error_body,
    make_client,
    sandbox_client,
)

PERSON = {"title": "Ada", "phone": "+14155551234"}


def statuses(sandbox) -> list[int]:
    return [r.status for r in sandbox.request_log]


def test_full_jitter_exponential_backoff_is_capped():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert [policy.backoff(n, 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.backoff(3, 0.25) == 0.5
    assert policy.backoff(3, 0.0) == 0.0


def test_5xx_backs_off_then_succeeds(sandbox):
    made = sandbox.add_contact_direct(PERSON)
    # 500, 500, no answer within the client's timeout, then the contact.
    clock = FaultSteps(sandbox, {"error_rate": 1.0}, {"error_rate": 1.0}, {"latency": 1.0}, {})
    client, _ = sandbox_client(
        sandbox, clock, retry=RetryPolicy(base_delay=1.0, max_delay=30.0), timeout=0.5
    )
    with client:
        contact = client.get_contact(made["id"])
    assert contact.id == made["id"]
    assert clock.sleeps == [1.0, 2.0, 4.0]  # jitter pinned to 1.0
    assert client.last_attempts == 4 and client.requests_sent == 4
    assert statuses(sandbox)[:2] == [500, 500]


def test_jitter_spreads_the_delay(sandbox):
    made = sandbox.add_contact_direct(PERSON)
    clock = FaultSteps(sandbox, {"error_rate": 1.0}, {})
    client, _ = sandbox_client(sandbox, clock, retry=RetryPolicy(base_delay=2.0), jitter=0.3)
    with client:
        client.get_contact(made["id"])
    assert clock.sleeps == [pytest.approx(0.6)]
    assert statuses(sandbox) == [500, 200]


def test_429_waits_exactly_retry_after(sandbox):
    made = sandbox.add_contact_direct(PERSON)
    clock = FaultSteps(sandbox, {"burst_429": 1})
    # Backoff would be 5 s: the 1 s slept is the server's Retry-After.
    client, spy = sandbox_client(sandbox, clock, retry=RetryPolicy(base_delay=5.0))
    with client:
        client.get_contact(made["id"])
    assert [r.status_code for r in spy.responses] == [429, 200]
    assert spy.responses[0].headers["Retry-After"] == "1"
    assert clock.sleeps == [1.0]
    assert client.last_attempts == 2


def test_429_without_retry_after_falls_back_to_backoff():
    # Mocked: every 429 of the sandbox carries Retry-After.
    clock = FakeClock()
    script = Script(api_response(429, None), api_response(200, {"data": contact_json()}))
    client = make_client(script, clock, retry=RetryPolicy(base_delay=0.5))
    client.get_contact("contact_1")
    assert clock.sleeps == [0.5]


def _bad_body(sandbox, client):
    client.create_contact({"title": "", "phone": "+14155550100"}, "k1")


def _revoked_key(sandbox, client):
    sandbox.revoke_key("ek_test_retry_key")
    client.create_contact(PERSON, "k1")


def _read_only_key(sandbox, client):
    sandbox.add_key("ek_test_retry_key", scopes=("contacts:read",))
    client.create_contact(PERSON, "k1")


def _missing_contact(sandbox, client):
    client.update_contact("contact_ffffffff", {"title": "B"}, "k1")


def _phone_taken(sandbox, client):
    sandbox.add_contact_direct(PERSON)
    client.create_contact({**PERSON, "title": "Ada 2"}, "k1")


@pytest.mark.parametrize(
    ("status", "provoke"),
    [
        (400, _bad_body),
        (401, _revoked_key),
        (403, _read_only_key),
        (404, _missing_contact),
        (409, _phone_taken),
    ],
)
def test_client_errors_are_never_retried(sandbox, status, provoke):
    sandbox.add_key("ek_test_retry_key", scopes=("*",))
    clock = FakeClock()
    client, spy = sandbox_client(sandbox, clock, key="ek_test_retry_key")
    with client, pytest.raises(errors.ErzyCallError) as info:
        provoke(sandbox, client)
    assert info.value.status == status
    assert info.value.attempts == 1 and len(spy.requests) == 1 and clock.sleeps == []
    assert statuses(sandbox) == [status]


def test_422_is_never_retried():
    # Mocked: the sandbox has no 422 answer.
    clock = FakeClock()
    script = Script(api_response(422, error_body("X")), api_response(200, {"data": {}}))
    client = make_client(script, clock)
    with pytest.raises(errors.UnprocessableError) as info:
        client.create_contact(PERSON, idempotency_key="k1")
    assert info.value.attempts == 1 and len(script.requests) == 1 and clock.sleeps == []


def test_attempts_are_bounded(sandbox):
    made = sandbox.add_contact_direct(PERSON)
    clock = FaultSteps(sandbox, {"error_rate": 1.0})
    client, spy = sandbox_client(
        sandbox, clock, retry=RetryPolicy(max_attempts=3, max_total_wait=1e9)
    )
    with client, pytest.raises(errors.ServerError) as info:
        client.get_contact(made["id"])
    assert info.value.attempts == 3 and len(spy.requests) == 3 and len(clock.sleeps) == 2
    assert statuses(sandbox) == [500, 500, 500]


def test_a_burst_of_429s_is_waited_out_past_the_attempt_count(sandbox):
    """Ten 429s with Retry-After: 1 from a policy of three attempts: the API says when to come
    back, and the wait fits the budget, so the request is made the eleventh time."""
    made = sandbox.add_contact_direct(PERSON)
    clock = FakeClock()
    sandbox.faults.burst_429 = 10
    client, spy = sandbox_client(
        sandbox, clock, retry=RetryPolicy(max_attempts=3, max_total_wait=60.0)
    )
    with client:
        assert client.get_contact(made["id"]).id == made["id"]
    assert [r.status_code for r in spy.responses] == [429] * 10 + [200]
    assert clock.sleeps == [1.0] * 10 and client.last_attempts == 11


def _used_up(sandbox, client, seconds: float) -> None:
    """The key's one request per ``seconds`` is taken: the next ones get a real 429."""
    sandbox.set_limits(((1, seconds),))
    client.list_contact_groups()


def test_total_wait_is_bounded_even_with_attempts_left(sandbox):
    clock = FakeClock()
    client, spy = sandbox_client(
        sandbox, clock, retry=RetryPolicy(max_attempts=100, max_total_wait=50.0)
    )
    with client:
        _used_up(sandbox, client, 20.0)
        with pytest.raises(errors.RateLimitedError) as info:
            client.get_contact("contact_1")
    limited = spy.responses[1:]
    assert [r.status_code for r in limited] == [429, 429, 429]
    # Each wait is the Retry-After the server sent (20 s, or 19 if a second went by): two of
    # them are slept, a third would exceed 50 s, so it gives up at attempt 3.
    assert clock.sleeps == [float(r.headers["Retry-After"]) for r in limited[:2]]
    assert all(19.0 <= s <= 20.0 for s in clock.sleeps)
    assert info.value.attempts == 3 and "after 3 attempts" in str(info.value)


def test_a_retry_after_longer_than_the_budget_fails_fast(sandbox):
    clock = FakeClock()
    client, spy = sandbox_client(sandbox, clock, retry=RetryPolicy(max_total_wait=300.0))
    with client:
        _used_up(sandbox, client, 3600.0)
        with pytest.raises(errors.RateLimitedError) as info:
            client.get_contact("contact_1")
    assert info.value.retry_after is not None and info.value.retry_after > 300
    assert clock.sleeps == [] and len(spy.requests) == 2  # the one used up, and the 429


def test_writes_resend_the_same_key_and_bytes_on_every_retry(sandbox):
    # Response lost (the contact is written), 500, lost again (a replay), then the replayed 201.
    clock = FaultSteps(
        sandbox, {"lose_response_rate": 1.0}, {"error_rate": 1.0}, {"lose_response_rate": 1.0}, {}
    )
    client, spy = sandbox_client(sandbox, clock)
    with client:
        made = client.create_contact({**PERSON, "tags": ["é"]}, "create-1")
    assert len(spy.requests) == 4 and client.last_attempts == 4
    assert {r.headers["Idempotency-Key"] for r in spy.requests} == {"create-1"}
    assert len({r.content for r in spy.requests}) == 1
    assert [r.lost for r in sandbox.request_log] == [True, False, True, False]
    assert statuses(sandbox)[1:] == [500, 201, 201]
    assert [c["id"] for c in sandbox.contacts()] == [made.id]
    assert sandbox.stats()["writes"] == 1


def test_delete_404_after_a_lost_response_counts_as_deleted():
    # Mocked: the sandbox keeps DELETE's idempotency record and replays 204, where a server that
    # ignores Idempotency-Key on DELETE answers 404 (the case this tolerance exists for).
    clock = FakeClock()
    script = Script(
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        api_response(404, error_body("NOT_FOUND")),
    )
    client = make_client(script, clock)
    assert client.delete_contact("contact_1", "del-1") is None
    assert client.last_attempts == 2


def test_delete_after_a_lost_response_and_a_real_404(sandbox):
    made = sandbox.add_contact_direct(PERSON)
    clock = FaultSteps(sandbox, {"lose_response_rate": 1.0}, {})
    client, _ = sandbox_client(sandbox, clock)
    with client:
        assert client.delete_contact(made["id"], "del-1") is None
        assert client.last_attempts == 2 and sandbox.contacts() == []
        # Without a lost response first, a 404 is a real 404.
        with pytest.raises(errors.NotFoundError):
            client.delete_contact(made["id"], "del-2")


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
