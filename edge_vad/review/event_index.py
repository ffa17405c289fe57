"""Events as the review page lists them: events.jsonl and feedback.jsonl, merged per event id.

    index = EventIndex(events_dir)
    index.refresh()                                   # reads what was appended since the last call
    index.query(camera="front-door", cls="fighting", day="2026-12-02", tz_offset_min=-60)
    index.get(event_id)                               # the newest record of that event, with its verdict

An event's records (start, update..., end) are cumulative, so the newest one (highest `seq`) says all
that is known. The index keeps only that record per event (about 1 KB each). Records without a usable
`id` or `source` are skipped.
"""

from __future__ import annotations

import re
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from edge_vad.review.feedback import FEEDBACK_FILE, event_class, latest_verdicts
from edge_vad.review.jsonl_tail import JsonlTail

EVENTS_FILE = "events.jsonl"
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")  # what ids look like (uuid4); nothing else is looked up
DEFAULT_LIMIT = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_time(text: Any) -> Optional[datetime]:
    """An ISO 8601 time from a record -> aware datetime (naive counts as UTC); None when unusable."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def summary(event: Mapping[str, Any], verdict: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """What the event list shows of an event."""
    fine = event.get("fine") if isinstance(event.get("fine"), Mapping) else {}
    return {
        "id": event["id"], "source": event.get("source"), "start_time": event.get("start_time"),
        "end_time": event.get("end_time"), "state": "ended" if event.get("type") == "end" else "open",
        "class": event_class(event), "description": fine.get("description", ""),
        "peak_score": event.get("peak_score"), "mean_score": event.get("mean_score"),
        "start_s": event.get("start_s"), "end_s": event.get("end_s"),
        "has_snapshot": bool(event.get("snapshot")), "has_clip": bool(event.get("clip")),
        "verdict": verdict.get("verdict") if verdict else None,
    }


class EventIndex:
    def __init__(self, events_dir: Path):
        self.events_dir = Path(events_dir)
        self._events = JsonlTail(self.events_dir / EVENTS_FILE)
        self._feedback = JsonlTail(self.events_dir / FEEDBACK_FILE)
        self._by_id: Dict[str, Dict[str, Any]] = {}
        self._started: Dict[str, datetime] = {}
        self._verdicts: Dict[str, Mapping[str, Any]] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            for record in self._events.read_new():
                self._add(record)
            self._verdicts.update(latest_verdicts(self._feedback.read_new()))

    def _add(self, record: Dict[str, Any]) -> None:
        event_id, source = record.get("id"), record.get("source")
        if not isinstance(event_id, str) or not EVENT_ID.match(event_id) or not isinstance(source, str):
            return
        seen = self._by_id.get(event_id)
        if seen is not None and _seq(seen) > _seq(record):
            return  # an older record arriving late never hides a newer one
        self._by_id[event_id] = record
        self._started[event_id] = parse_time(record.get("start_time")) or _EPOCH

    def get(self, event_id: str) -> Optional[Dict[str, Any]]:
        """The newest record of an event plus `verdict` (its latest feedback record or None)."""
        with self._lock:
            event = self._by_id.get(event_id)
            if event is None:
                return None
            return {**event, "verdict": self._verdicts.get(event_id)}

    def query(self, camera: Optional[str] = None, cls: Optional[str] = None, day: Optional[str] = None,
              tz_offset_min: int = 0, limit: int = DEFAULT_LIMIT) -> List[Dict[str, Any]]:
        """Event summaries, newest first. `day` (YYYY-MM-DD) is a date in the viewer's time zone, whose offset
        is given as JavaScript's Date.getTimezoneOffset() gives it (minutes, UTC minus local)."""
        window = _day_window(day, tz_offset_min) if day else None
        with self._lock:
            rows: List[Tuple[datetime, Dict[str, Any]]] = []
            for event_id, event in self._by_id.items():
                started = self._started[event_id]
                if camera and event.get("source") != camera:
                    continue
                if cls and event_class(event) != cls:
                    continue
                if window and not window[0] <= started < window[1]:
                    continue
                rows.append((started, summary(event, self._verdicts.get(event_id))))
        rows.sort(key=lambda r: (r[0], r[1]["id"]), reverse=True)
        return [r for _, r in rows[:max(0, limit)]]

    def facets(self) -> Dict[str, List[str]]:
        """The cameras and classes that occur, for the page's filters."""
        with self._lock:
            cameras = {e["source"] for e in self._by_id.values()}
            classes = {c for c in (event_class(e) for e in self._by_id.values()) if c}
        return {"cameras": sorted(cameras), "classes": sorted(classes)}

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)


def _seq(record: Mapping[str, Any]) -> int:
    seq = record.get("seq")
    return seq if isinstance(seq, int) else -1


def _day_window(day: str, tz_offset_min: int) -> Tuple[datetime, datetime]:
    try:
        local_midnight = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(f"day must be YYYY-MM-DD, got {day!r}") from None
    start = local_midnight + timedelta(minutes=tz_offset_min)
    return start, start + timedelta(days=1)
