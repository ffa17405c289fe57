"""Operator feedback on events: "false alarm" or "confirmed", appended to feedback.jsonl beside events.jsonl.

    log = FeedbackLog(events_dir)
    record = log.mark(event, "false_alarm", note="a shadow")   # event: the merged event dict
    verdicts = latest_verdicts(read_events(events_dir / FEEDBACK_FILE))   # {event id: record}

Each mark is one line, written by events.JsonlEventWriter: one os.write on an O_APPEND descriptor, then
fsync, so concurrent writers never interleave and a crash never leaves half a line (see its docstring).
Scene calibration and training read the file later; its schema (FEEDBACK_SCHEMA_VERSION = 1):

    schema      1
    event_id    the event's `id` in events.jsonl
    source      the camera (source name) of the event
    verdict     "false_alarm" | "confirmed"
    note        the operator's free text, "" when none (at most MAX_NOTE_CHARS characters)
    marked_at   ISO 8601 UTC wall clock of the mark, e.g. 2026-12-02T01:25:09.665+00:00
    by          where the mark came from ("review-page")
    event       the event as it was when marked: start_time, end_time (ISO 8601 UTC), start_s, end_s
                (media / stream seconds), start_frame, end_frame, peak_score, mean_score,
                class (the fine stage's class or null), clip, snapshot (paths as recorded)

Marks can be changed: the LAST line for an event_id is the verdict that counts.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

from edge_vad.errors import EdgeVadError
from edge_vad.runtime.events import JsonlEventWriter, iso_utc, utc_now

FEEDBACK_FILE = "feedback.jsonl"
FEEDBACK_SCHEMA_VERSION = 1
VERDICTS = ("false_alarm", "confirmed")
MAX_NOTE_CHARS = 500
_EVENT_FIELDS = ("start_time", "end_time", "start_s", "end_s", "start_frame", "end_frame", "peak_score",
                 "mean_score", "clip", "snapshot")


def event_class(event: Mapping[str, Any]) -> Optional[str]:
    fine = event.get("fine")
    return fine.get("class") if isinstance(fine, Mapping) else None


def feedback_record(event: Mapping[str, Any], verdict: str, note: str = "", by: str = "review-page",
                    marked_at: Optional[str] = None) -> Dict[str, Any]:
    """The feedback line for a mark; raises ValueError naming what is wrong with verdict or note."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise ValueError(f"note must be text of at most {MAX_NOTE_CHARS} characters")
    snapshot = {k: event.get(k) for k in _EVENT_FIELDS}
    snapshot["class"] = event_class(event)
    return {"schema": FEEDBACK_SCHEMA_VERSION, "event_id": event["id"], "source": event.get("source"),
            "verdict": verdict, "note": note, "marked_at": marked_at or iso_utc(utc_now()), "by": by,
            "event": snapshot}


def latest_verdicts(records: Iterable[Mapping[str, Any]]) -> Dict[str, Mapping[str, Any]]:
    """event id -> its last feedback record (later lines supersede earlier ones)."""
    out: Dict[str, Mapping[str, Any]] = {}
    for r in records:
        if isinstance(r.get("event_id"), str) and r.get("verdict") in VERDICTS:
            out[r["event_id"]] = r
    return out


class FeedbackLog:
    """Appends marks to <events_dir>/feedback.jsonl; the file is opened on the first mark (a review of a
    read-only copy of an events folder works until somebody marks an event)."""

    def __init__(self, events_dir: Path):
        self.path = Path(events_dir) / FEEDBACK_FILE
        self._writer: Optional[JsonlEventWriter] = None
        self._lock = threading.Lock()

    def mark(self, event: Mapping[str, Any], verdict: str, note: str = "") -> Dict[str, Any]:
        record = feedback_record(event, verdict, note)
        with self._lock:
            if self._writer is None:
                try:
                    self._writer = JsonlEventWriter(self.path)
                except OSError as exc:
                    raise EdgeVadError(f"{self.path}: cannot write feedback ({exc.strerror}); the events folder "
                                       "must be writable by edge-vad") from None
            self._writer.emit(record)
        return record

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
