"""The review page's security, each case against the real HTTP server on an ephemeral loopback port:
loopback by default, a token for any other bind (constant-time compare), files only as events recorded
them (no `..`, absolute paths, symlinks or URL-encoded tricks), and the security headers on every response."""

from __future__ import annotations

import http.client
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, Optional, Tuple

import cv2
import numpy as np
import pytest

from edge_vad.config import Config, HttpConfig, config_errors
from edge_vad.errors import ConfigError
from edge_vad.review import web
from edge_vad.review.routes import STATIC_DIR, ReviewApp
from edge_vad.review.web import CSP, AccessGuard
from edge_vad.runtime.http_server import HttpServer
from edge_vad.runtime.metrics import Metrics
from edge_vad.runtime.runner import http_guard

EVENT_ID = "0b1c2d3e-aaaa-4bbb-8ccc-123456789abc"
TOKEN = "s3cret-Token_0123456789abcdef"


def request(server: HttpServer, method: str, target: str, headers: Optional[Dict[str, str]] = None,
            body: Optional[bytes] = None) -> Tuple[int, http.client.HTTPMessage, bytes]:
    """A raw request: the target is sent exactly as given (no client-side normalisation of `..`)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        hdrs = {"Host": f"127.0.0.1:{server.port}", **(headers or {})}
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def jpeg(path: Path, value: int = 128) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((24, 32, 3), value, np.uint8))
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return buf.tobytes()


def write_events(events_dir: Path, *records: dict) -> None:
    events_dir.mkdir(parents=True, exist_ok=True)
    with open(events_dir / "events.jsonl", "a") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")


def end_record(event_id: str = EVENT_ID, **fields) -> dict:
    record = {"id": event_id, "type": "end", "seq": 2, "source": "cam", "start_frame": 10, "start_s": 1.0,
              "start_time": "2026-12-02T10:00:00.000+00:00", "emitted_at": "2026-12-02T10:00:05.000+00:00",
              "frames": 40, "peak_score": 0.9, "mean_score": 0.7, "end_frame": 50, "end_s": 5.0,
              "end_time": "2026-12-02T10:00:04.000+00:00",
              "fine": {"class": "fighting", "probs": {"fighting": 0.9, "normal": 0.1}, "description": "",
                       "top_snippets": []}, "clip": None, "snapshot": None, "schema": 1}
    record.update(fields)
    return record


def recorded_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "events"
    jpeg(folder / "snapshots" / f"{EVENT_ID}.channel-mean.jpg", 200)
    write_events(folder, end_record(snapshot=str(folder / "snapshots" / f"{EVENT_ID}.channel-mean.jpg")))
    return folder


@pytest.fixture
def events_dir(tmp_path: Path) -> Path:
    return recorded_folder(tmp_path)


@pytest.fixture
def served(events_dir: Path):
    app = ReviewApp(events_dir, cache_dir=events_dir.parent / "cache")
    with HttpServer(Metrics(), "127.0.0.1", 0, app=app, guard=AccessGuard("127.0.0.1")) as server:
        yield server, events_dir
    app.close()


@pytest.fixture(scope="module")
def read_only_server(tmp_path_factory):
    """One server for the many read-only cases (starting and stopping one takes up to half a second)."""
    events = recorded_folder(tmp_path_factory.mktemp("review"))
    app = ReviewApp(events, cache_dir=events.parent / "cache")
    with HttpServer(Metrics(), "127.0.0.1", 0, app=app, guard=AccessGuard("127.0.0.1")) as server:
        yield server
    app.close()


@pytest.fixture
def token_server(events_dir: Path):
    """The guard a non-loopback bind gets (token required). The socket itself stays on 127.0.0.1: tests
    only ever talk to loopback; the guard's behaviour depends on its configuration, not on the socket."""
    app = ReviewApp(events_dir, cache_dir=events_dir.parent / "cache")
    guard = AccessGuard("192.0.2.10", TOKEN)  # TEST-NET-1: an address that is not loopback
    with HttpServer(Metrics(), "127.0.0.1", 0, app=app, guard=guard) as server:
        yield server
    app.close()


# ----------------------------------------------------------------------------- bind address and token
def test_loopback_is_the_default_bind():
    assert HttpConfig().host == "127.0.0.1" and HttpConfig().token_file is None
    assert Config().http.host == "127.0.0.1"


def test_a_non_loopback_bind_without_a_token_is_a_config_error(tmp_path: Path):
    lines = config_errors({"http": {"host": "0.0.0.0"}}, "edge-vad.toml")
    assert len(lines) == 1 and "http" in lines[0] and "token_file" in lines[0], lines
    assert config_errors({"http": {"host": "::1"}}, "x.toml") == []  # IPv6 loopback needs none
    assert config_errors({"http": {"host": "127.0.0.2"}}, "x.toml") == []  # all of 127.0.0.0/8 is loopback
    with pytest.raises(ConfigError, match="not a loopback address"):
        AccessGuard("0.0.0.0", None)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    guard = http_guard(HttpConfig(host="0.0.0.0", token_file=token_file))
    assert guard.token == TOKEN
    token_file.write_text("short\n")
    with pytest.raises(ConfigError, match="fewer than 16"):
        http_guard(HttpConfig(host="0.0.0.0", token_file=token_file))
    with pytest.raises(ConfigError, match="cannot read"):
        http_guard(HttpConfig(host="0.0.0.0", token_file=tmp_path / "missing"))


def test_loopback_server_refuses_a_foreign_host_header(served):
    server, _ = served
    assert request(server, "GET", "/")[0] == 200
    assert request(server, "GET", "/", {"Host": f"localhost:{server.port}"})[0] == 200
    assert request(server, "GET", "/", {"Host": "localhost:9000"})[0] == 200  # an SSH tunnel's port
    # DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 sends its own name
    status, _, body = request(server, "GET", "/api/events", {"Host": "attacker.example:80"})
    assert status == 403 and b"not this loopback server" in body
    assert request(server, "GET", "/healthz", {"Host": "attacker.example"})[0] == 403


def test_token_required_off_loopback(token_server):
    server = token_server
    status, headers, _ = request(server, "GET", "/api/events")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert request(server, "GET", "/healthz")[0] == 401  # every route, monitoring included
    assert request(server, "GET", "/api/events", {"Authorization": "Bearer wrong-token-0123456789"})[0] == 403
    assert request(server, "GET", "/api/events", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert request(server, "GET", "/api/events", {"Cookie": "edge_vad_token=nope"})[0] == 403
    assert request(server, "GET", "/api/events", {"Cookie": f"other=1; edge_vad_token={TOKEN}"})[0] == 200
    # one visit with ?token=: a cookie, and a redirect that drops the token from the address
    status, headers, _ = request(server, "GET", f"/?token={TOKEN}&x=1")
    assert status == 303 and headers["Location"] == "/?x=1"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"edge_vad_token={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert request(server, "GET", "/?token=wrong")[0] == 403
    # a path starting with "//" must not redirect to another site
    status, headers, _ = request(server, "GET", f"//evil.example/?token={TOKEN}")
    assert status == 303 and headers["Location"] == "/evil.example/"


def test_the_token_never_reaches_the_log(token_server, caplog):
    caplog.set_level("DEBUG", logger="edge_vad.http")
    assert request(token_server, "GET", f"/api/events?camera=x&token={TOKEN}")[0] == 303
    assert "GET /api/events?camera=x&token=<redacted>" in caplog.text and TOKEN not in caplog.text


def test_token_is_compared_in_constant_time(token_server, monkeypatch):
    calls = []
    real = web.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web.hmac, "compare_digest", spy)
    assert request(token_server, "GET", "/api/events", {"Authorization": "Bearer guess-0123456789abcdef"})[0] == 403
    assert calls == [(b"guess-0123456789abcdef", TOKEN.encode())]


# ----------------------------------------------------------------------------- files only as recorded
TRAVERSALS = [
    "/api/events/../../etc/passwd",
    f"/api/events/{EVENT_ID}/../../../etc/passwd",
    "/api/events/..%2f..%2fetc%2fpasswd/snapshot",
    "/api/events/%2e%2e%2f%2e%2e%2fetc%2fpasswd/snapshot",
    "/api/events/%252e%252e%252fetc/snapshot",
    "/api/events/..%5c..%5cetc%5cpasswd/snapshot",
    "/static/../routes.py",
    "/static/..%2froutes.py",
    "/static/%2e%2e%2froutes.py",
    "/static/%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/etc/passwd",
    "/api/events/%2Fetc%2Fpasswd/clip",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_paths_never_reach_files_outside_what_events_recorded(read_only_server, target):
    status, headers, body = request(read_only_server, "GET", target)
    assert status == 404, (target, status, body[:200])
    assert b"root:" not in body and b"def " not in body


def test_a_recorded_snapshot_is_served(served):
    server, events_dir = served
    status, headers, body = request(server, "GET", f"/api/events/{EVENT_ID}/snapshot")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == (events_dir / "snapshots" / f"{EVENT_ID}.channel-mean.jpg").read_bytes()


@pytest.mark.parametrize("recorded", ["../../outside.jpg", "{outside}", "snapshots/../../outside.jpg",
                                      "..\\..\\outside.jpg", "%2e%2e%2foutside.jpg", ""])
def test_recorded_paths_that_leave_the_events_folder_are_refused(tmp_path, recorded):
    events_dir = tmp_path / "events"
    outside = tmp_path / "outside.jpg"
    jpeg(outside)
    (events_dir / "snapshots").mkdir(parents=True)  # so that snapshots/../../outside.jpg would exist
    write_events(events_dir, end_record(snapshot=recorded.format(outside=outside)))
    app = ReviewApp(events_dir, cache_dir=tmp_path / "cache")
    with HttpServer(None, "127.0.0.1", 0, app=app, guard=AccessGuard("127.0.0.1")) as server:
        status, _, body = request(server, "GET", f"/api/events/{EVENT_ID}/snapshot")
    assert status == 404 and body != outside.read_bytes()


def test_symlinks_are_not_followed(tmp_path):
    events_dir = tmp_path / "events"
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    (events_dir / "snapshots").mkdir(parents=True)
    link = events_dir / "snapshots" / f"{EVENT_ID}.jpg"
    os.symlink(secret, link)
    other = "1b1c2d3e-aaaa-4bbb-8ccc-123456789abc"
    elsewhere = tmp_path / "elsewhere"
    jpeg(elsewhere / f"{other}.jpg")
    (events_dir / "clips").symlink_to(elsewhere, target_is_directory=True)  # a symlinked folder, too
    write_events(events_dir, end_record(snapshot=str(link)),
                 end_record(other, clip=str(events_dir / "clips" / f"{other}.jpg")))
    app = ReviewApp(events_dir, cache_dir=tmp_path / "cache")
    with HttpServer(None, "127.0.0.1", 0, app=app, guard=AccessGuard("127.0.0.1")) as server:
        status, _, body = request(server, "GET", f"/api/events/{EVENT_ID}/snapshot")
        assert status == 404 and b"root:" not in body
        assert request(server, "GET", f"/api/events/{other}/clip")[0] == 404


def test_files_no_event_recorded_are_not_reachable(served):
    server, events_dir = served
    jpeg(events_dir / "snapshots" / "unrecorded.jpg")
    (events_dir / "feedback.jsonl").write_text("{}\n")
    for target in ("/snapshots/unrecorded.jpg", "/api/events/unrecorded/snapshot", "/events.jsonl",
                   "/feedback.jsonl", "/api/events/unrecorded.jpg/snapshot"):
        assert request(server, "GET", target)[0] == 404, target


# ----------------------------------------------------------------------------- headers and writes
def test_every_response_sets_csp_and_nosniff(served, token_server):
    server, _ = served
    targets = ["/", "/static/app.js", "/static/style.css", "/static/favicon.svg", "/api/status", "/api/events",
               f"/api/events/{EVENT_ID}", f"/api/events/{EVENT_ID}/snapshot", "/healthz", "/metrics",
               "/nope", "/static/nope.js", "/api/events/../x"]
    seen = set()
    for target in targets:
        status, headers, _ = request(server, "GET", target)
        seen.add(status)
        assert headers["Content-Security-Policy"] == CSP, target
        assert headers["X-Content-Type-Options"] == "nosniff", target
        assert headers["X-Frame-Options"] == "DENY" and headers["Referrer-Policy"] == "no-referrer"
    for status, headers, _ in (request(server, "GET", "/", {"Host": "evil.example"}),
                               request(token_server, "GET", "/"),
                               request(server, "POST", "/api/status", {"Content-Type": "application/json"}, b"{}")):
        seen.add(status)
        assert headers["Content-Security-Policy"] == CSP and headers["X-Content-Type-Options"] == "nosniff"
    assert {200, 503, 404, 403, 401, 405} <= seen  # successes, refusals and errors alike
    # no inline script, no CDN: every script and style comes from this origin
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "default-src 'none'" in CSP


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.problems = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and not attrs.get("src", "").startswith("/static/"):
            self.problems.append(f"inline or foreign script {attrs}")
        self._in_script = tag == "script"
        for name in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}=...> (inline handler / style)")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append("inline script content")


def test_the_page_has_no_inline_script_and_no_external_resources():
    tags = _Tags()
    tags.feed((STATIC_DIR / "index.html").read_text())
    assert tags.problems == []
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        urls = [u for u in re.findall(r"https?://[^\s\"')]+", text) if u != "http://www.w3.org/2000/svg"]
        assert urls == [], (path.name, urls)  # nothing fetched from elsewhere (devices are often offline)
    assert "innerHTML" not in (STATIC_DIR / "app.js").read_text()  # data goes in as text only


def test_writes_need_json_from_the_same_origin(served):
    server, events_dir = served
    target = f"/api/events/{EVENT_ID}/feedback"
    good = json.dumps({"verdict": "confirmed"}).encode()
    assert request(server, "POST", target, {"Content-Type": "text/plain"}, good)[0] == 415  # a plain <form>
    assert request(server, "POST", target, {"Content-Type": "application/json",
                                            "Origin": "http://evil.example"}, good)[0] == 403
    assert request(server, "POST", target, {"Content-Type": "application/json"}, b"x" * 70000)[0] == 413
    assert request(server, "POST", target, {"Content-Type": "application/json"},
                   json.dumps({"verdict": "maybe"}).encode())[0] == 400
    assert not (events_dir / "feedback.jsonl").exists()
    status, _, body = request(server, "POST", target, {"Content-Type": "application/json",
                                                       "Origin": f"http://127.0.0.1:{server.port}"}, good)
    assert status == 200 and json.loads(body)["feedback"]["verdict"] == "confirmed"
    assert len((events_dir / "feedback.jsonl").read_text().splitlines()) == 1


def test_clips_are_served_in_byte_ranges(tmp_path):
    events_dir = tmp_path / "events"
    clip = events_dir / "clips" / f"{EVENT_ID}.webm"
    clip.parent.mkdir(parents=True)
    data = bytes(range(256)) * 40
    clip.write_bytes(data)  # already WebM: served as it is
    write_events(events_dir, end_record(clip=str(clip)))
    app = ReviewApp(events_dir, cache_dir=tmp_path / "cache")
    with HttpServer(None, "127.0.0.1", 0, app=app, guard=AccessGuard("127.0.0.1")) as server:
        target = f"/api/events/{EVENT_ID}/clip"
        status, headers, body = request(server, "GET", target)
        assert status == 200 and body == data and headers["Accept-Ranges"] == "bytes"
        assert headers["Content-Type"] == "video/webm"
        status, headers, body = request(server, "GET", target, {"Range": "bytes=100-199"})
        assert status == 206 and body == data[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        status, headers, body = request(server, "GET", target, {"Range": "bytes=-10"})
        assert status == 206 and body == data[-10:]
        status, headers, _ = request(server, "GET", target, {"Range": f"bytes={len(data)}-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
