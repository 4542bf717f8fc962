"""A real HTTP proxy on 127.0.0.1 in front of the sandbox, for answers no API would give but
the network in between can: a proxy's HTML 404 page, a failure on one kind of request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

Answer = tuple[int, str, bytes]  # status, content type, body
FORWARDED_HEADERS = ("x-api-key", "idempotency-key", "content-type")
RETURNED_HEADERS = ("content-type", "retry-after", "x-ratelimit-limit", "x-ratelimit-remaining",
                    "x-ratelimit-reset")


class Proxy:
    """Forwards every request to ``target`` (a base URL ending in /api/v1) unless ``answer``
    returns an :data:`Answer` for (method, path)."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/").rsplit("/api/v1", 1)[0]
        self.answer: Callable[[str, str], Answer | None] | None = None
        self.answered: list[tuple[str, str, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                own = proxy.answer(self.command, self.path) if proxy.answer else None
                if own is not None:
                    status, content_type, content = own
                    headers = {"content-type": content_type}
                else:
                    headers_in = {k: v for k, v in self.headers.items()
                                  if k.lower() in FORWARDED_HEADERS}
                    resp = httpx.request(self.command, proxy.target + self.path,
                                         headers=headers_in, content=body, timeout=30)
                    status, content = resp.status_code, resp.content
                    headers = {k: v for k, v in resp.headers.items()
                               if k.lower() in RETURNED_HEADERS}
                proxy.answered.append((self.command, self.path, status))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


HTML_404: Answer = (404, "text/html", b"<html><body><h1>404 Not Found</h1>nginx</body></html>")
