"""HTTP glue: a ThreadingHTTPServer speaking HTTP/1.1 (keep-alive) in front of SandboxApp.

Every response has a Content-Length (none on 204), so httpx can reuse connections. A lost
response (fault) closes the connection without writing a byte. ``stop()`` shuts the listener,
closes every open connection so idle keep-alive threads end, joins the serving thread and closes
the store.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .app import API_PREFIX, Request, RequestRecord, Response, SandboxApp
from .config import DEMO_API_KEY, SandboxConfig
from .faults import Faults

MAX_BODY = 1024 * 1024


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ErzyCallSandbox/1.0"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK would
        # stall every keep-alive response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.app.cfg.log_requests:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise _BadRequest(413, "PAYLOAD_TOO_LARGE", "Request body too large.")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _BadRequest(400, "BAD_REQUEST", "Bad Content-Length.") from None
        if length < 0 or length > MAX_BODY:
            raise _BadRequest(413, "PAYLOAD_TOO_LARGE", "Request body too large.")
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except (_BadRequest, ValueError) as exc:
            self.close_connection = True
            status, code, message = (
                (exc.status, exc.code, exc.message)
                if isinstance(exc, _BadRequest)
                else (400, "BAD_REQUEST", "Malformed chunked body.")
            )
            self._send(Response(status, {"error": {"code": code, "message": message}}))
            return
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        req = Request(self.command, url.path, query, self.headers, body, url.query)
        try:
            resp = self.server.app.handle(req)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            resp = Response(
                500, {"error": {"code": "INTERNAL_ERROR", "message": "Internal server error."}}
            )
        if resp.lose:
            self.close_connection = True
            return
        self._send(resp)

    def _send(self, resp: Response) -> None:
        payload = b"" if resp.body is None else json.dumps(resp.body).encode("utf-8")
        self.send_response(resp.status)
        if payload:
            self.send_header("Content-Type", "application/json")
        if resp.status != 204:
            self.send_header("Content-Length", str(len(payload)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def wait_idle(self, timeout: float) -> None:
        """Wait (bounded) until every connection's handler thread has finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._conns_lock:
                if not self._conns:
                    return
            time.sleep(0.01)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client went away (or stop() closed it): nothing to report
        super().handle_error(request, client_address)


class SandboxServer:
    """A local ErzyCall API: ``SandboxServer(cfg)``, or ``SandboxServer(port=0, ...)`` overrides."""

    def __init__(self, cfg: SandboxConfig | None = None, **overrides: Any) -> None:
        cfg = cfg or SandboxConfig()
        self.config = replace(cfg, **overrides) if overrides else cfg
        self.app = SandboxApp(self.config)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("sandbox already started")
        if self._closed:
            raise RuntimeError("a stopped sandbox cannot restart; create a new one")
        self._httpd = _HTTPServer((self.config.host, self.config.port), self.app)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"erzycall-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open connections, join the thread, close the store. Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.close_connections()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if httpd is not None:
            httpd.wait_idle(timeout=5.0)
        if not self._closed:
            self.app.store.close()
            self._closed = True

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until no connection is open: a request that reached the server just
        before its client was killed is handled to the end (as a real server would)."""
        if self._httpd is not None:
            self._httpd.wait_idle(timeout)

    def __enter__(self) -> SandboxServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("sandbox not started")
        return int(self._httpd.server_address[1])

    @property
    def host(self) -> str:
        host = self.config.host
        if host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if host == "::":
            return "::1"
        return host

    @property
    def url(self) -> str:
        """``http://host:port`` (admin endpoints live under ``/_sandbox/``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + API_PREFIX

    # -- operator surface -----------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self.app.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.app.faults = value

    @property
    def request_log(self) -> list[RequestRecord]:
        return self.app.request_log()

    def stats(self) -> dict[str, Any]:
        return self.app.stats()

    def reset_stats(self) -> None:
        self.app.reset_stats()

    def set_limits(self, limits: tuple[tuple[int, float], ...]) -> None:
        self.app.limiter.set_windows(limits)

    def reset_limits(self) -> None:
        """Forget every key's request history (windows stay as configured)."""
        self.app.limiter.reset()

    def add_key(
        self,
        key: str,
        scopes: tuple[str, ...] | list[str] = ("*",),
        expires_at: float | None = None,
    ) -> None:
        self.app.add_key(key, tuple(scopes), expires_at)

    def revoke_key(self, key: str) -> None:
        self.app.revoke_key(key)

    def expire_key(self, key: str) -> None:
        self.app.expire_key(key)

    def contacts(self) -> list[dict[str, Any]]:
        return self.app.store.all()

    def groups(self) -> list[dict[str, Any]]:
        return self.app.store.groups()

    def add_contact_direct(self, contact: Mapping[str, Any]) -> dict[str, Any]:
        return self.app.add_contact_direct(contact)


def serve_forever(cfg: SandboxConfig | None = None) -> None:
    """Run a sandbox in the foreground until Ctrl-C (the ``erzy-pipelines sandbox`` command).
    Ctrl-C works even when the process was started with it ignored (``nohup``, ``&`` in a
    script, a parent that ignores it): the promise printed below must hold."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    srv = SandboxServer(cfg or SandboxConfig(log_requests=True)).start()
    limits = ", ".join(f"{n}/{s:g}s" for n, s in srv.config.limits)
    print(f"ErzyCall sandbox API listening at {srv.base_url}")
    if DEMO_API_KEY in srv.config.keys:
        print(f"Demo API key (X-API-Key): {DEMO_API_KEY}")
    print(f"Rate limits per key: {limits}")
    print(f"Storage: {srv.config.db_path or 'in memory (lost on exit)'}")
    print(f"Admin: {srv.url}/_sandbox/stats  (Ctrl-C to stop)", flush=True)
    stopped = threading.Event()
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        print("\nStopping sandbox.", flush=True)
    finally:
        srv.stop()
