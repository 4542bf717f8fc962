"""Test doubles shared by the client tests: a fake clock, a scripted HTTP transport (only for
answers the sandbox cannot give) and a client of the real sandbox with instant backoff."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from erzy_pipelines.core.budget import RateWindow
from erzy_pipelines.erzycall import ErzyCallClient, RateLimiter, RetryPolicy
from erzy_pipelines.sandbox import DEMO_API_KEY, Faults

KEY = "ek_test_unit_secret_value_42"
EPOCH = 1_700_000_000.0


class FakeClock:
    """Monotonic and wall time that only move when someone sleeps (or the test advances them)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def api_response(status: int, body: Any = None, headers: dict[str, str] | None = None):
    """An httpx.Response with a JSON body (or none)."""
    content = b"" if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return httpx.Response(status, content=content, headers=hdrs)


def error_body(code: str, message: str = "boom", details: list | None = None) -> dict:
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err}


class Script:
    """A MockTransport handler answering from a list (responses, exceptions or callables)."""

    def __init__(self, *steps: Any) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        if callable(step) and not isinstance(step, httpx.Response):
            return step(request)
        return step


def make_client(
    handler: Callable[[httpx.Request], httpx.Response],
    clock: FakeClock,
    *,
    windows: tuple[RateWindow, ...] = (RateWindow(1000, 60.0),),
    retry: RetryPolicy | None = None,
    jitter: float = 1.0,
) -> ErzyCallClient:
    limiter = RateLimiter(windows, clock=clock, sleep=clock.sleep, wall_clock=clock.wall)
    return ErzyCallClient(
        KEY,
        "https://api.example.test/api/v1",
        limiter=limiter,
        retry=retry or RetryPolicy(max_attempts=5, max_total_wait=60.0),
        clock=clock,
        sleep=clock.sleep,
        jitter=lambda: jitter,
        http_transport=httpx.MockTransport(handler),
    )


def contact_json(cid: str = "contact_1", phone: str = "+14155551234", **extra: Any) -> dict:
    return {"id": cid, "title": "Ada", "phone": phone, "createdAt": "2025-01-01T00:00:00Z",
            **extra}


# --- against the real sandbox, with instant backoff ------------------------------------------


class Spy(httpx.BaseTransport):
    """A real HTTP transport that keeps each request and response. Not a mock: every request goes
    over TCP to the server, which alone decides the answer; this only lets a test see the bytes,
    keys and headers that travelled."""

    def __init__(self) -> None:
        self._real = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self._real.handle_request(request)
        self.responses.append(response)
        return response

    def close(self) -> None:
        self._real.close()


class FaultSteps(FakeClock):
    """A fake clock whose every sleep (the backoff before a retry) also moves the sandbox to its
    next fault setting: attempt n meets ``steps[n - 1]`` (the last one stays)."""

    def __init__(self, sandbox: Any, *steps: dict[str, Any]) -> None:
        super().__init__()
        self._sandbox = sandbox
        self._steps = list(steps)
        self._next()

    def _next(self) -> None:
        if self._steps:
            # Each step is the whole setting: whatever it does not name is off.
            self._sandbox.faults = Faults(**self._steps.pop(0))

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self._next()


def sandbox_client(
    sandbox: Any,
    clock: FakeClock,
    *,
    key: str = DEMO_API_KEY,
    retry: RetryPolicy | None = None,
    jitter: float = 1.0,
    timeout: float = 5.0,
) -> tuple[ErzyCallClient, Spy]:
    """A client of the running sandbox whose waits go to ``clock`` (so backoff is instant).

    The client-side limiter is generous and does not pace from the server's headers: these
    tests are about the retry loop, and a paced wait would land in ``clock.sleeps`` too.
    """
    limiter = RateLimiter(
        (RateWindow(10_000, 60.0),), clock=clock, sleep=clock.sleep, wall_clock=clock.wall,
        pace_from_headers=False,
    )
    spy = Spy()
    client = ErzyCallClient(
        key,
        sandbox.base_url,
        limiter=limiter,
        retry=retry or RetryPolicy(max_attempts=5, max_total_wait=60.0),
        timeout=timeout,
        clock=clock,
        sleep=clock.sleep,
        jitter=lambda: jitter,
        http_transport=spy,
    )
    return client, spy
