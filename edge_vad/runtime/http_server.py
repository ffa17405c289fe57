"""A tiny HTTP server for /healthz and /metrics, in a daemon thread.

    server = HttpServer(metrics, host="127.0.0.1", port=8085).start()   # port 0: ephemeral
    server.url            -> "http://127.0.0.1:8085"
    server.stop()

GET /healthz -> JSON from Metrics.health(); 200 when "ok", 503 when "degraded" (so a plain
              HTTP check, e.g. a load balancer or `curl -f`, sees the difference): degraded while any
              source is not open or has had no frame for [http] stalled_after_s.
HEAD on either path: the same status and headers without the body.
GET /metrics -> Prometheus text exposition of the Metrics' own registry.
Anything else 404. The stdlib server is enough for two read-only endpoints polled every few
seconds, and adds no dependency.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from edge_vad.errors import EdgeVadError
from edge_vad.runtime.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("edge_vad.http")


def _handler_for(metrics: Metrics):
    class Handler(BaseHTTPRequestHandler):
        server_version = "edge-vad"
        _head_only = False

        def do_HEAD(self) -> None:  # noqa: N802 - monitors (`curl -I`, uptime checkers) probe with HEAD
            self._head_only = True
            try:
                self.do_GET()
            finally:
                self._head_only = False

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            try:
                if path == "/healthz":
                    health = metrics.health()
                    body = json.dumps(health).encode()
                    self._send(200 if health["status"] == "ok" else 503, "application/json", body)
                elif path == "/metrics":
                    self._send(200, CONTENT_TYPE, metrics.exposition())
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz or /metrics\n")
            except Exception:  # noqa: BLE001 - a bug here must answer 500, not kill the thread silently
                log.exception("http: error serving %s", path)
                self._send(500, "text/plain; charset=utf-8", b"internal error\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not self._head_only:  # HEAD: the GET's status and headers, no body (RFC 9110 9.3.2)
                self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:
            log.debug("http: %s " + fmt, self.client_address[0], *args)  # polled often: keep it out of INFO

    return Handler


class HttpServer:
    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0):
        self.metrics = metrics
        self.host = host
        self.requested_port = port
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "HttpServer":
        try:
            server = ThreadingHTTPServer((self.host, self.requested_port), _handler_for(self.metrics))
        except OSError as exc:
            raise EdgeVadError(
                f"cannot serve /healthz and /metrics on {self.host}:{self.requested_port} ({exc.strerror}); "
                "choose another [http] port or stop what uses it"
            ) from None
        server.daemon_threads = True  # a hung client must not block shutdown
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="edge-vad-http", daemon=True)
        self._thread.start()
        log.info("http: /healthz and /metrics on %s", self.url)
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
