"""Fault injection: the failures a sync must survive, on demand and reproducibly.

Every rate is drawn from one ``random.Random(seed)``, and a draw is only made when a rate is
strictly between 0 and 1, so a test that sets ``error_rate=0.5`` sees the same sequence of
failures on every run. Where each fault strikes in a request's life:

1. ``latency`` (for ``latency_rate`` of requests): sleep before anything else.
2. ``burst_429``: the next N API requests answer 429 ``RATE_LIMITED`` with ``Retry-After: 1``,
   before authentication; they do not count toward the rate-limit windows.
   ``proxy_404``: the next N API requests answer 404 with a proxy's own body (no API error
   envelope, so no ``NOT_FOUND`` code), as a gateway in front of the API does during a
   deployment or with a wrong base path; they do not count toward the rate-limit windows.
3. ``error_rate``: after authentication and rate limiting (the request is counted), answer 500
   ``INTERNAL_ERROR`` before any route runs, so nothing is written.
4. ``lose_response_rate``: on POST/PATCH/DELETE that reached their route, the outcome is committed
   (and its idempotency record kept), then the connection is closed without a response.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class Faults:
    """Runtime-mutable fault settings. Assign fields directly or call :meth:`update`."""

    error_rate: float = 0.0
    lose_response_rate: float = 0.0
    latency: float = 0.0
    latency_rate: float = 1.0
    burst_429: int = 0
    proxy_404: int = 0

    def update(self, values: dict[str, Any]) -> None:
        """Set several fields at once, validated (used by ``POST /_sandbox/faults``)."""
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        checked: dict[str, Any] = {}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if name in ("burst_429", "proxy_404"):
                if int(value) != value or value < 0:
                    raise ValueError(f"{name} must be a non-negative integer")
                checked[name] = int(value)
            elif name == "latency":
                if value < 0:
                    raise ValueError("latency must be >= 0")
                checked[name] = float(value)
            else:
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{name} must be between 0 and 1")
                checked[name] = float(value)
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Makes the seeded draws for a :class:`Faults` instance, under a lock."""

    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _hit(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        with self._lock:
            return self._rng.random() < rate

    def latency(self) -> float:
        """Seconds to sleep before handling this request (0.0 for none)."""
        delay = self.faults.latency
        if delay <= 0.0 or not self._hit(self.faults.latency_rate):
            return 0.0
        return delay

    def _take(self, counter: str) -> bool:
        """Consume one of a counted fault (``burst_429``, ``proxy_404``), if any are left."""
        with self._lock:
            left = getattr(self.faults, counter)
            if left > 0:
                setattr(self.faults, counter, left - 1)
                return True
            return False

    def take_burst(self) -> bool:
        """Consume one forced 429, if any are left."""
        return self._take("burst_429")

    def take_proxy_404(self) -> bool:
        """Consume one forced proxy 404, if any are left."""
        return self._take("proxy_404")

    def server_error(self) -> bool:
        return self._hit(self.faults.error_rate)

    def lose_response(self) -> bool:
        return self._hit(self.faults.lose_response_rate)
