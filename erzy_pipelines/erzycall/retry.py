"""The retry policy and the one retry loop every request goes through.

Retried: 429 (after Retry-After), 5xx, and transport failures (connection refused or dropped,
timeouts), the latter two with exponential backoff and full jitter. Never retried: 4xx other
than 429 — repeating them cannot change the answer. The total time spent sleeping between
attempts is bounded, and so is the number of attempts — but a 429 is the API saying *when* to
come back, not that it failed: a burst of 429s whose Retry-After fits in what is left of the wait
budget is waited out however many times it comes (up to ``RATE_LIMITED_ATTEMPTS``), and only a
Retry-After beyond the budget means the key's budget is spent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import ErzyCallError, RateLimitedError
from .logutil import mask_pii

T = TypeVar("T")

#: Attempts answered 429 one request may make: a bound for an API that keeps answering 429 with
#: a Retry-After of 0 (with Retry-After: 1 the wait budget ends a burst sooner).
RATE_LIMITED_ATTEMPTS = 100
logger = logging.getLogger("erzy_pipelines.erzycall")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    ``max_total_wait`` bounds the sum of sleeps between attempts; a retry whose delay would
    exceed what is left of it is not made and the last error is raised instead.
    """

    max_attempts: int = 6
    max_total_wait: float = 300.0
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.max_total_wait < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")

    def backoff(self, retry: int, jitter: float) -> float:
        """Full-jitter exponential backoff for the ``retry``-th retry (1-based)."""
        cap = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return cap * min(max(jitter, 0.0), 1.0)

    def delay(self, error: ErzyCallError, retry: int, jitter: float) -> float:
        """Seconds to sleep before the ``retry``-th retry after ``error``."""
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            return error.retry_after
        return self.backoff(retry, jitter)


def call_with_retries(
    attempt: Callable[[int], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None],
    jitter: Callable[[], float],
    describe: str = "request",
) -> tuple[T, int]:
    """Run ``attempt(n)`` until it succeeds or must stop; returns (result, attempts made).

    The raised error gets ``.attempts`` set to the number of attempts made.
    """
    waited = 0.0
    number = 1
    while True:
        try:
            return attempt(number), number
        except ErzyCallError as err:
            err.attempts = number
            if not err.retryable:
                raise
            waiting_out = isinstance(err, RateLimitedError) and err.retry_after is not None
            limit = RATE_LIMITED_ATTEMPTS if waiting_out else policy.max_attempts
            if number >= limit:
                logger.info("giving up on %s after %d attempts: %s", describe, number,
                            mask_pii(str(err)))
                raise
            delay = policy.delay(err, number, jitter())
            if waited + delay > policy.max_total_wait:
                logger.info(
                    "giving up on %s: retry in %.2fs would exceed the %.1fs wait budget (%s)",
                    describe, delay, policy.max_total_wait, mask_pii(str(err)),
                )
                raise
            logger.info(
                "retrying %s in %.2fs (attempt %d/%d failed: %s)",
                describe, delay, number, policy.max_attempts, mask_pii(str(err)),
            )
            sleep(delay)
            waited += delay
            number += 1
