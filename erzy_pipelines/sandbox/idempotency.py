"""``Idempotency-Key`` handling for the sandbox's writes, so a client's retry never writes twice.

Choices where the docs say [unknown]:

* A key is scoped to the API key + method + path, so one ``Idempotency-Key`` on two different
  paths is two records. POST, PATCH and DELETE honour it.
* Only successful (2xx) outcomes are kept, for ``idempotency_ttl`` seconds (default 24 h): a
  replay with the same body (compared as canonical JSON, so key order and whitespace do not
  matter) answers the original status and body (a snapshot, even if the contact changed since)
  with ``Idempotent-Replayed: true`` and writes nothing; a different body answers 409
  ``IDEMPOTENCY_MISMATCH``. A 4xx is not kept, so a retry after fixing the data is judged afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .api_errors import ApiError, validation_error
from .config import SandboxConfig
from .contacts_db import ContactStore
from .messages import Request, Response

IDEMPOTENCY_KEY_MAX = 255


class Idempotency:
    """Runs a write once per ``Idempotency-Key``; ``on_replay`` is told of every replay."""

    def __init__(
        self, store: ContactStore, cfg: SandboxConfig, on_replay: Callable[[], None]
    ) -> None:
        self.store = store
        self.cfg = cfg  # read ``idempotency_ttl`` on every request
        self._on_replay = on_replay

    def run(
        self, req: Request, bucket: str, fingerprint: str, action: Callable[[], Response]
    ) -> Response:
        """``action()`` under the store lock, or the remembered answer to the same request."""
        idem = req.headers.get("Idempotency-Key")
        if idem is None:
            with self.store.lock:
                return action()
        if not idem.strip() or len(idem) > IDEMPOTENCY_KEY_MAX:
            raise validation_error(
                [{"field": "Idempotency-Key", "message": f"must be 1-{IDEMPOTENCY_KEY_MAX} chars"}]
            )
        scope = "\x1f".join((bucket, req.method, req.path.rstrip("/"), idem))
        now = time.time()
        with self.store.lock:
            found = self.store.idempotent_result(scope, now, self.cfg.idempotency_ttl)
            if found is not None:
                stored_fp, status, body = found
                if stored_fp != fingerprint:
                    raise ApiError(
                        409,
                        "IDEMPOTENCY_MISMATCH",
                        "This Idempotency-Key was already used with a different request body.",
                    )
                self._on_replay()
                return Response(status, body, {"Idempotent-Replayed": "true"})
            resp = action()
            if 200 <= resp.status < 300:
                self.store.remember(scope, fingerprint, resp.status, resp.body, now)
            return resp
