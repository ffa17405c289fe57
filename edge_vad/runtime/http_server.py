"""A tiny HTTP server for /healthz, /metrics and the review page, in a daemon thread.

    server = HttpServer(metrics, host="127.0.0.1", port=8085).start()   # port 0: ephemeral
    server = HttpServer(metrics, host, port, app=ReviewApp(...), guard=AccessGuard(host, token))
    server.url            -> "http://127.0.0.1:8085"
    server.stop()

GET /healthz -> JSON from Metrics.health(); 200 when "ok", 503 when "degraded" (so a plain
              HTTP check, e.g. a load balancer or `curl -f`, sees the difference): degraded while any
              source is not open or has had no frame for [http] stalled_after_s.
HEAD on either path: the same status and headers without the body.
GET /metrics -> Prometheus text exposition of the Metrics' own registry.
Anything else goes to `app` (the review page, edge_vad.review.routes), or is 404 without one.
Every request passes `guard` first (loopback Host check, or the access token; edge_vad.review.web), and
every response carries its security headers (Content-Security-Policy, nosniff). The stdlib server is
enough for a page one or two operators look at, and adds no dependency.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from edge_vad.errors import EdgeVadError
from edge_vad.review.web import AccessGuard, Request, Response, read_request, redact, write_response
from edge_vad.runtime.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("edge_vad.http")


def _handler_for(metrics: Optional[Metrics], app=None, guard: Optional[AccessGuard] = None):
    class Handler(BaseHTTPRequestHandler):
        server_version = "edge-vad"
        def do_HEAD(self) -> None:  # noqa: N802 - monitors (`curl -I`, uptime checkers) probe with HEAD
            # the GET's status and headers, no body (RFC 9110 9.3.2)
            self._serve("GET", head_only=True)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def _serve(self, method: str, head_only: bool = False) -> None:
            try:
                request = read_request(self, method)
                if isinstance(request, Request):
                    response = (guard.check(request) if guard is not None else None) or self._route(request)
                else:
                    response = request
            except Exception:  # noqa: BLE001 - a bug here must answer 500, not kill the thread silently
                log.exception("http: error serving %s", redact(self.path))
                response = Response.text(500, "internal error")
            try:
                write_response(self, response, head_only=head_only)
            except (BrokenPipeError, ConnectionResetError):  # the browser cancelled (a <video> seeking, a reload)
                log.debug("http: client left during %s", redact(self.path))

        def _route(self, request: Request) -> Response:
            if metrics is not None and request.path == "/healthz" and request.method == "GET":
                health = metrics.health()
                return Response(200 if health["status"] == "ok" else 503, "application/json",
                                json.dumps(health).encode())
            if metrics is not None and request.path == "/metrics" and request.method == "GET":
                return Response(200, CONTENT_TYPE, metrics.exposition())
            if app is not None:
                return app.handle(request)
            return Response.text(404, "not found: try /healthz or /metrics")

        def log_message(self, fmt: str, *args) -> None:
            # Polled often: DEBUG, not INFO. A one-time ?token= login must not end up in a log.
            log.debug("http: %s %s", self.client_address[0], redact(fmt % args))

    return Handler


class HttpServer:
    def __init__(self, metrics: Optional[Metrics], host: str = "127.0.0.1", port: int = 0, *, app=None,
                 guard: Optional[AccessGuard] = None):
        self.metrics = metrics
        self.host = host
        self.requested_port = port
        self.app = app
        self.guard = guard
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "HttpServer":
        try:
            server = ThreadingHTTPServer((self.host, self.requested_port),
                                         _handler_for(self.metrics, self.app, self.guard))
        except OSError as exc:
            raise EdgeVadError(
                f"cannot serve HTTP on {self.host}:{self.requested_port} ({exc.strerror}); "
                "choose another [http] port or stop what uses it"
            ) from None
        server.daemon_threads = True  # a hung client must not block shutdown
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="edge-vad-http", daemon=True)
        self._thread.start()
        served = [what for what, on in (("the review page", self.app is not None),
                                         ("/healthz and /metrics", self.metrics is not None)) if on]
        log.info("http: %s on %s", ", ".join(served) or "nothing", self.url)
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "HttpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
