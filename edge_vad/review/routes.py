"""The review page's URL map (served by edge_vad.runtime.http_server, after its AccessGuard).

    GET  /                                  the page (static/index.html)
    GET  /static/<file>                     the page's CSS, JavaScript and icon (only the shipped files)
    GET  /api/status                        {mode: live|review, events_dir, cameras: [names]}
    GET  /api/cameras                       live state per camera (edge_vad.review.live)
    GET  /api/cameras/<name>/frame.jpg      the newest frame of a camera
    GET  /api/events?camera=&class=&day=&tz=&limit=   {events: newest first, facets: {cameras, classes}}
    GET  /api/events/<id>                   the event's newest record, with `verdict`
    GET  /api/events/<id>/snapshot          its heatmap snapshot (JPEG)
    GET  /api/events/<id>/clip              its clip, as a browser plays it (edge_vad.review.media)
    POST /api/events/<id>/feedback          {"verdict": "false_alarm"|"confirmed", "note": "..."} -> feedback.jsonl

Files are only ever reached through an event id (see edge_vad.review.media.recorded_file).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Dict, Optional

from edge_vad.errors import EdgeVadError
from edge_vad.review.event_index import DEFAULT_LIMIT, EVENT_ID, EventIndex
from edge_vad.review.feedback import FeedbackLog
from edge_vad.review.live import LiveState
from edge_vad.review.media import CLIPS, SNAPSHOTS, BrowserClips, ClipError, open_no_follow, recorded_file
from edge_vad.review.web import FileBody, Request, Response

log = logging.getLogger("edge_vad.review")

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
BROWSER_CLIPS_DIR = "browser-clips"  # beside events.jsonl: VP8 WebM copies of the clips (see media)
CLIP_WAIT_S = 120.0  # a request waits this long for a clip's browser copy, then gets 503 + Retry-After
MAX_LIMIT = 2000
JSON = "application/json"


def load_static(folder: Path = STATIC_DIR) -> Dict[str, Response]:
    """The page's files, read once: only these names are ever served from /static/."""
    files = {}
    for path in sorted(folder.iterdir()):
        ctype = STATIC_TYPES.get(path.suffix)
        if ctype and path.is_file():
            files[path.name] = Response(200, ctype, path.read_bytes())
    if "index.html" not in files:
        raise EdgeVadError(f"{folder}: the review page's files are missing; reinstall edge-vad")
    return files


def browser_clip_cache(events_dir: Path) -> Path:
    """<events_dir>/browser-clips when the events folder is writable, else a private temporary folder (a
    read-only copy of an events folder can still be reviewed)."""
    cache = Path(events_dir) / BROWSER_CLIPS_DIR
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if os.access(cache, os.W_OK):
            return cache
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="edge-vad-review-"))


def _json(status: int, payload: Any) -> Response:
    return Response(status, JSON, json.dumps(payload, allow_nan=False, ensure_ascii=False).encode("utf-8"))


def _file(path: Path, content_type: str) -> Response:
    fd = open_no_follow(path)
    # A recorded snapshot or clip never changes under its name (written once, atomically): cacheable.
    return Response(200, content_type, file=FileBody(fd, os.fstat(fd).st_size),
                    headers={"Cache-Control": "private, max-age=3600"})


class ReviewApp:
    def __init__(self, events_dir: Path, live: Optional[LiveState] = None, cache_dir: Optional[Path] = None,
                 clip_wait_s: float = CLIP_WAIT_S):
        self.events_dir = Path(events_dir)
        self.live = live
        self.index = EventIndex(self.events_dir)
        self.feedback = FeedbackLog(self.events_dir)
        self._cache_dir = cache_dir
        self._clips: Optional[BrowserClips] = None  # made on the first clip request: no folder until needed
        self._clips_lock = threading.Lock()
        self.clip_wait_s = clip_wait_s
        self.static = load_static()

    @property
    def clips(self) -> BrowserClips:
        with self._clips_lock:
            if self._clips is None:
                cache = self._cache_dir if self._cache_dir is not None else browser_clip_cache(self.events_dir)
                self._clips = BrowserClips(cache)
            return self._clips

    def close(self) -> None:
        self.feedback.close()
        if self._clips is not None:
            self._clips.close()

    def handle(self, request: Request) -> Response:
        s = request.segments
        if request.method == "POST":
            if len(s) == 4 and s[:2] == ["api", "events"] and s[3] == "feedback":
                return self._feedback(s[2], request.body)
            return Response.text(405, "method not allowed")
        if request.method != "GET":
            return Response.text(405, "method not allowed")
        if not s:
            return self.static["index.html"]
        if len(s) == 2 and s[0] == "static":
            return self.static.get(s[1]) or Response.text(404, "not found")
        if s[0] != "api" or len(s) < 2:
            return Response.text(404, "not found: the page is at /")
        if s[1:] == ["status"]:
            return _json(200, {"mode": "live" if self.live is not None else "review",
                               "events_dir": str(self.events_dir),
                               "cameras": self.live.names if self.live is not None else []})
        if s[1] == "cameras":
            return self._cameras(s[2:])
        if s[1] == "events":
            return self._events(s[2:], request.query)
        return Response.text(404, "not found")

    def _cameras(self, rest) -> Response:
        if self.live is None:
            return _json(200, {"cameras": []}) if not rest else Response.text(404, "no live cameras in review mode")
        if not rest:
            return _json(200, {"cameras": self.live.cameras()})
        if len(rest) == 2 and rest[1] == "frame.jpg":
            frame = self.live.frame_jpeg(rest[0])
            if frame is None:
                return Response.text(404, "no frame from this camera yet")
            return Response(200, "image/jpeg", frame[1], headers={"X-Frame-Seq": str(frame[0])})
        return Response.text(404, "not found")

    def _events(self, rest, query: Dict[str, str]) -> Response:
        self.index.refresh()
        if not rest:
            try:
                limit = min(MAX_LIMIT, int(query.get("limit", DEFAULT_LIMIT)))
                tz = int(query.get("tz", "0"))
                events = self.index.query(camera=query.get("camera") or None, cls=query.get("class") or None,
                                          day=query.get("day") or None, tz_offset_min=tz, limit=limit)
            except ValueError as exc:
                return Response.text(400, f"bad query: {exc}")
            return _json(200, {"events": events, "facets": self.index.facets()})
        event_id = rest[0]
        event = self.index.get(event_id) if EVENT_ID.match(event_id) else None
        if event is None:
            return Response.text(404, "no such event")
        if len(rest) == 1:
            return _json(200, event)
        if len(rest) == 2 and rest[1] == "snapshot":
            path = recorded_file(self.events_dir, event.get("snapshot"), SNAPSHOTS)
            return _file(path, "image/jpeg") if path else Response.text(404, "this event has no snapshot to serve")
        if len(rest) == 2 and rest[1] == "clip":
            return self._clip(event_id, event)
        return Response.text(404, "not found")

    def _clip(self, event_id: str, event: Dict[str, Any]) -> Response:
        path = recorded_file(self.events_dir, event.get("clip"), CLIPS)
        if path is None:
            return Response.text(404, "this event has no clip to serve (yet)")
        try:
            playable, ctype = self.clips.playable(event_id, path, self.clip_wait_s)
        except (TimeoutError, FutureTimeout):
            return Response(503, "text/plain; charset=utf-8", b"the clip is still being prepared; retry\n",
                            headers={"Retry-After": "5"})
        except ClipError as exc:
            log.warning("review: clip of event %s: %s", event_id, exc)
            return Response.text(500, f"the clip cannot be played in a browser: {exc}")
        return _file(playable, ctype)

    def _feedback(self, event_id: str, body: bytes) -> Response:
        self.index.refresh()
        event = self.index.get(event_id) if EVENT_ID.match(event_id) else None
        if event is None:
            return Response.text(404, "no such event")
        try:
            payload = json.loads(body.decode("utf-8"))
            if not isinstance(payload, dict):
                raise ValueError("send a JSON object")
            record = self.feedback.mark(event, str(payload.get("verdict", "")), payload.get("note", "") or "")
        except (ValueError, UnicodeDecodeError) as exc:
            return Response.text(400, f"bad feedback: {exc}")
        except EdgeVadError as exc:
            return Response.text(503, str(exc))
        log.info("review: event %s marked %s", event_id, record["verdict"])
        self.index.refresh()
        return _json(200, {"ok": True, "feedback": record})
