"""HTTP plumbing shared by the runtime's server and the review page: request and response types, the
security headers every response carries, and the access guard.

Headers on EVERY response (SECURITY_HEADERS): a Content-Security-Policy that allows only this origin's
own scripts, styles, images and media (no inline script, no CDN: devices are often offline, and an
injected <script> cannot run), no framing, no referrer; X-Content-Type-Options nosniff.

AccessGuard, checked before any route:
- bound to loopback, no token: the Host header must name a loopback address (127.0.0.0/8, ::1,
  localhost; any port, so an SSH tunnel works). A web page elsewhere that rebinds its own DNS name to
  127.0.0.1 (DNS rebinding) sends its own name and is refused.
- with a token (required by the config for any other bind address): every request must carry it, as
  `Authorization: Bearer <token>`, or the cookie the page sets after one visit with `?token=<token>`
  (HttpOnly, SameSite=Strict; the response redirects to the same URL without the token). Compared in
  constant time (hmac.compare_digest). Missing: 401; wrong: 403.
- requests that change something (POST) must send JSON and, when the browser says where it comes
  from (Origin), come from this same origin: a form or a fetch from another site is refused (403).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from edge_vad.errors import ConfigError

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
TOKEN_COOKIE = "edge_vad_token"
TOKEN_PARAM = "token"
MIN_TOKEN_CHARS = 16
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
LOOPBACK_NAMES = ("localhost",)
TEXT = "text/plain; charset=utf-8"


@dataclass
class Request:
    method: str
    target: str  # as sent: path and query, percent-encoded
    headers: Message
    body: bytes = b""
    path: str = ""  # the path part of target, still percent-encoded
    segments: List[str] = field(default_factory=list)  # path split on "/" FIRST, then each part decoded
    query: Dict[str, str] = field(default_factory=dict)  # first value of each parameter

    @classmethod
    def parse(cls, method: str, target: str, headers: Message, body: bytes = b"") -> "Request":
        parts = urlsplit(target)
        # Split before decoding: an encoded "/" (%2f) stays inside its segment and never becomes a separator.
        segments = [unquote(s) for s in parts.path.split("/") if s]
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        return cls(method, target, headers, body, parts.path or "/", segments, query)


@dataclass
class FileBody:
    fd: int  # an open descriptor; the server closes it
    size: int


@dataclass
class Response:
    status: int
    content_type: str = TEXT
    body: bytes = b""
    headers: Dict[str, str] = field(default_factory=dict)
    file: Optional[FileBody] = None  # streamed instead of body (clips), with Range support

    @classmethod
    def text(cls, status: int, message: str) -> "Response":
        return cls(status, TEXT, (message.rstrip("\n") + "\n").encode())


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for anything else, names included (we cannot know)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_header_name(value: str) -> str:
    """The host name of a Host header: 'localhost:8085' -> 'localhost', '[::1]:80' -> '::1'."""
    value = value.strip()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def read_token(path: Path, key: str = "http.token_file") -> str:
    """The access token from its file (one line); ConfigError (one line) when missing or too weak."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key} = '{path}': cannot read it ({exc.strerror}); create it with one line, the token "
                          "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')") from None
    if not TOKEN_CHARS.match(token):
        raise ConfigError(f"{key} = '{path}': the token may hold only letters, digits and . _ ~ + / = - (it travels "
                          "in a cookie and a header); python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{key} = '{path}': the token has {len(token)} characters, fewer than {MIN_TOKEN_CHARS}; "
                          "use a long random one (python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


class AccessGuard:
    def __init__(self, bind_host: str, token: Optional[str] = None):
        if token is None and not is_loopback_host(bind_host):
            raise ConfigError(f"http.host = '{bind_host}' is not a loopback address: set http.token_file so that "
                              "only holders of the token can see cameras and events, or bind 127.0.0.1")
        self.bind_host = bind_host
        self.token = token

    def check(self, request: Request) -> Optional[Response]:
        """None when the request may proceed; else the refusal to send."""
        if self.token is None:
            host = host_header_name(request.headers.get("Host", ""))
            if not is_loopback_host(host):
                return Response.text(403, f"forbidden: Host '{host}' is not this loopback server; open "
                                          "http://127.0.0.1:<port>/ (an SSH tunnel to it works too)")
        else:
            refused = self._check_token(request)
            if refused is not None:
                return refused
        if request.method == "POST":
            return self._check_write(request)
        return None

    def _check_token(self, request: Request) -> Optional[Response]:
        offered = _bearer(request.headers.get("Authorization", "")) or _cookie(request.headers, TOKEN_COOKIE)
        in_query = request.query.get(TOKEN_PARAM)
        if offered is None and in_query is not None and request.method == "GET":
            if not _same(in_query, self.token):
                return Response.text(403, "forbidden: wrong token")
            # One visit with ?token=...: keep it in a cookie and drop it from the address bar (and history).
            rest = {k: v for k, v in request.query.items() if k != TOKEN_PARAM}
            # One leading "/" only: "//host/..." would be another site (an open redirect).
            location = "/" + quote(request.path, safe="/%").lstrip("/") + ("?" + urlencode(rest) if rest else "")
            return Response(303, TEXT, b"see other\n", headers={
                "Location": location,
                "Set-Cookie": f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"})
        if offered is None:
            return Response(401, TEXT, b"unauthorized: this server needs its access token (open the page once "
                            b"with ?token=..., or send Authorization: Bearer ...)\n",
                            headers={"WWW-Authenticate": 'Bearer realm="edge-vad"'})
        if not _same(offered, self.token):
            return Response.text(403, "forbidden: wrong token")
        return None

    @staticmethod
    def _check_write(request: Request) -> Optional[Response]:
        ctype = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return Response.text(415, "send JSON (Content-Type: application/json)")
        origin = request.headers.get("Origin")
        if origin is not None:
            if urlsplit(origin).netloc.lower() != request.headers.get("Host", "").strip().lower():
                return Response.text(403, "forbidden: cross-origin request")
        return None


_TOKEN_IN_URL = re.compile(r"([?&]" + TOKEN_PARAM + r"=)[^&\s]*")


def redact(text: str) -> str:
    """A request line or URL with the value of ?token= replaced, for logs."""
    return _TOKEN_IN_URL.sub(r"\1<redacted>", text)


def _same(offered: str, token: Optional[str]) -> bool:
    return token is not None and hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8"))


def _bearer(value: str) -> Optional[str]:
    scheme, _, credentials = value.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def _cookie(headers: Message, name: str) -> Optional[str]:
    for header in headers.get_all("Cookie") or []:
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
    return None


# --------------------------------------------------------------------------- writing a response
MAX_BODY_BYTES = 64 * 1024  # feedback is a few hundred bytes; anything near this is not ours
COPY_CHUNK = 256 * 1024


def read_request(handler: Any, method: str) -> "Request | Response":
    """A Request from a BaseHTTPRequestHandler (its body read, bounded), or the refusal to send."""
    body = b""
    length = handler.headers.get("Content-Length")
    if length:
        try:
            size = int(length)
        except ValueError:
            return Response.text(400, "bad Content-Length")
        if size < 0 or size > MAX_BODY_BYTES:
            return Response.text(413, f"request body over {MAX_BODY_BYTES} bytes")
        body = handler.rfile.read(size)
    return Request.parse(method, handler.path, handler.headers, body)


def byte_range(header: Optional[str], size: int) -> "Optional[Tuple[int, int]] | str":
    """One `Range: bytes=...` (RFC 9110 14.1.2) -> (first, last) inclusive; None: whole file (no or an
    unparsable / multi-range header, which a server may ignore); "unsatisfiable" when it lies past the end."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, sep, last = header[len("bytes="):].strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":  # suffix: the last N bytes
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or start < 0:
        return "unsatisfiable"
    if end < start:
        return None
    return start, min(end, size - 1)


def write_response(handler: Any, response: Response, head_only: bool = False) -> None:
    """Send `response` on a BaseHTTPRequestHandler: security and no-store headers always; files streamed,
    with single-range requests answered 206 (browsers' <video> asks for ranges to start and to seek)."""
    status, body, content_type, extra = response.status, response.body, response.content_type, dict(response.headers)
    file = response.file
    span: Optional[Tuple[int, int]] = None
    try:
        if file is not None:
            extra["Accept-Ranges"] = "bytes"
            wanted = byte_range(handler.headers.get("Range"), file.size) if status == 200 else None
            if wanted == "unsatisfiable":
                status, content_type = 416, TEXT
                extra["Content-Range"] = f"bytes */{file.size}"
            elif isinstance(wanted, tuple):
                status, span = 206, wanted
                extra["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{file.size}"
            elif file.size > 0:
                span = (0, file.size - 1)
        length = (span[1] - span[0] + 1) if span is not None else (0 if file is not None else len(body))
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(length))
        handler.send_header("Cache-Control", extra.pop("Cache-Control", "no-store"))
        for name, value in {**SECURITY_HEADERS, **extra}.items():
            handler.send_header(name, value)
        handler.end_headers()
        if head_only:
            return
        if span is not None and file is not None:
            _copy_span(file.fd, handler.wfile, span)
        elif file is None:
            handler.wfile.write(body)
    finally:
        if file is not None:
            os.close(file.fd)


def _copy_span(fd: int, out: Any, span: Tuple[int, int]) -> None:
    offset, remaining = span[0], span[1] - span[0] + 1
    while remaining > 0:
        chunk = os.pread(fd, min(COPY_CHUNK, remaining), offset)
        if not chunk:
            break
        out.write(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
