"""The HTTP layer: one httpx.Client, base URL checks, the key header, JSON, request counting.

It sends exactly one request per call and never raises for an HTTP status: the client's retry
loop decides what a status means. httpx failures become TransportError without the original
exception chained, because httpx exceptions hold the request — and with it the key header.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import TransportError
from .logutil import install_phone_filter, mask_pii
from .secret import Secret

logger = logging.getLogger("erzy_pipelines.erzycall")

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_KEPT_HEADERS = (
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-request-id",
    "content-type",
)
USER_AGENT = "erzy-pipelines/0.1 (+httpx)"


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_base_url(base_url: str, *, allow_insecure_http: bool = False) -> str:
    """Check and normalise the base URL (no trailing slash).

    Plain http would send the key in clear text, so it is refused except to loopback hosts
    (the local sandbox) or when explicitly allowed.
    """
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"invalid base URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("base URL must be an absolute http(s) URL")
    if url.userinfo:
        raise ValueError("base URL must not contain credentials")
    if url.query or url.fragment:
        raise ValueError("base URL must not contain a query or fragment")
    if url.scheme == "http" and not allow_insecure_http and not is_loopback_host(url.host):
        raise ValueError(
            f"refusing plain http:// to non-loopback host {url.host!r}: the API key would travel"
            " unencrypted (use https, or allow_insecure_http=True if you really mean it)"
        )
    return str(url).rstrip("/")


@dataclass(frozen=True)
class ApiResponse:
    """What the client needs from a response: status, a few headers, the parsed body."""

    status: int
    headers: Mapping[str, str]
    body: Any
    elapsed: float


class Transport:
    """Sends single requests to the API. Thread safe (httpx.Client is)."""

    def __init__(
        self,
        api_key: Secret,
        base_url: str,
        *,
        timeout: float = 30.0,
        allow_insecure_http: bool = False,
        http_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key = api_key
        install_phone_filter("httpx")
        self.base_url = validate_base_url(base_url, allow_insecure_http=allow_insecure_http)
        host = httpx.URL(self.base_url).host
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            timeout=timeout,
            verify=True,  # never configurable: TLS verification stays on
            follow_redirects=False,  # a redirect could carry the key to another host
            # Proxies from the environment must not intercept the local sandbox.
            trust_env=not is_loopback_host(host),
            transport=http_transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )
        self._count = 0
        self._lock = threading.Lock()

    @property
    def requests_sent(self) -> int:
        """Requests that left this process (a refused connection is not counted)."""
        return self._count

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        idempotency_key: str | None = None,
    ) -> ApiResponse:
        """Send one request; raise TransportError if no response arrived."""
        method = method.upper()
        headers = {"X-API-Key": self._key.reveal()}
        if content is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        elif method in WRITE_METHODS:
            raise ValueError(f"{method} {path} needs an idempotency key")
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        shown = mask_pii(f"{method} {path}" + (f" {clean}" if clean else ""))
        started = time.monotonic()
        try:
            response = self._http.request(
                method, path.lstrip("/"), params=clean or None, content=content, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Never reached the server: not counted as sent.
            logger.debug("%s -> could not connect (%s)", shown, type(exc).__name__)
            raise TransportError(
                f"{type(exc).__name__}: {self._scrub(str(exc)) or 'could not connect'}",
                method=method, path=path,
            ) from None
        except httpx.TimeoutException as exc:
            self._counted()
            logger.debug("%s -> timeout (%s)", shown, type(exc).__name__)
            raise TransportError(
                f"timed out ({type(exc).__name__})", method=method, path=path
            ) from None
        except httpx.HTTPError as exc:
            self._counted()
            logger.debug("%s -> no response (%s)", shown, type(exc).__name__)
            reason = self._scrub(str(exc)) or "no response"
            raise TransportError(
                f"{type(exc).__name__}: {reason}", method=method, path=path
            ) from None
        self._counted()
        elapsed = time.monotonic() - started
        kept = {h: response.headers[h] for h in _KEPT_HEADERS if h in response.headers}
        body = _parse_body(response)
        logger.debug("%s -> %d in %.0fms", shown, response.status_code, elapsed * 1000)
        return ApiResponse(response.status_code, kept, body, elapsed)

    def _counted(self) -> None:
        with self._lock:
            self._count += 1

    def _scrub(self, text: str) -> str:
        return mask_pii(text.replace(self._key.reveal(), "(redacted)"))

    def close(self) -> None:
        self._http.close()


def _parse_body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return response.text[:1000]
