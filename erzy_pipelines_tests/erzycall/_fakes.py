"""Test doubles shared by the client tests: a fake clock and a scripted HTTP transport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from erzy_pipelines.erzycall import ErzyCallClient, RateLimiter, RetryPolicy, Window

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
    windows: tuple[Window, ...] = (Window(1000, 60.0),),
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
