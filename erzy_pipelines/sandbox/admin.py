"""The sandbox's operator endpoints under ``/_sandbox``: stats, faults and a raw contact dump.

Kept apart from the API routes because they follow none of the API's rules: no key, no rate
limit, not logged, no faults. Tests and the demo use them to steer and watch a running sandbox.
"""

from __future__ import annotations

from typing import Any, Protocol

from .api_errors import not_found, validation_error
from .contacts_db import ContactStore
from .faults import Faults
from .messages import Request, Response, parse_json

ADMIN_PREFIX = "/_sandbox"


class AdminTarget(Protocol):
    """The parts of the sandbox app the operator endpoints read and steer."""

    store: ContactStore

    @property
    def faults(self) -> Faults: ...

    def stats(self) -> dict[str, Any]: ...

    def reset_stats(self) -> None: ...


def admin_response(app: AdminTarget, req: Request, sub: str) -> Response:
    """Answer ``req`` for ``ADMIN_PREFIX + sub``; raises ``ApiError`` (404, 400)."""
    route = (req.method, sub)
    if route == ("GET", "/stats"):
        return Response(200, app.stats())
    if route == ("GET", "/faults"):
        return Response(200, app.faults.as_dict())
    if route == ("POST", "/faults"):
        values = parse_json(req.body)
        if not isinstance(values, dict):
            raise validation_error([{"field": "body", "message": "must be a JSON object"}])
        try:
            app.faults.update(values)
        except ValueError as exc:
            raise validation_error([{"field": "body", "message": str(exc)}]) from None
        return Response(200, app.faults.as_dict())
    if route == ("POST", "/reset-stats"):
        app.reset_stats()
        return Response(200, app.stats())
    if route == ("GET", "/contacts"):
        return Response(200, {"data": app.store.all()})
    raise not_found("Route")
