"""`edge-vad events`: list and follow event records the way `journalctl` lists and follows a journal.

    edge-vad events /var/lib/edge-vad/events --since today --camera front-door
    edge-vad events --follow                     # then every record as it is appended (Ctrl-C ends)
    edge-vad events --output json | jq .         # the records themselves, one JSON object per line

A torn last line (a crash inside a write) is skipped with a warning; --follow picks up appends, and a
file that is replaced or truncated is read again from its start.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from edge_vad.errors import EdgeVadError
from edge_vad.review.event_index import EVENTS_FILE, parse_time
from edge_vad.review.jsonl_tail import JsonlTail

log = logging.getLogger("edge_vad.events")

FOLLOW_POLL_S = 0.5
OUTPUTS = ("short", "json")
_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)(?:\s+ago)?$")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: Optional[datetime] = None) -> datetime:
    """journalctl-style times: today, yesterday, now, 10m / 2h / 1d (ago), or an ISO date / date-time
    (naive = local time). Returns an aware datetime."""
    now = now or datetime.now(timezone.utc).astimezone()
    value = text.strip().lower()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if value == "now":
        return now
    if value == "today":
        return midnight
    if value == "yesterday":
        return midnight - timedelta(days=1)
    m = _RELATIVE.match(value)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise EdgeVadError(f"--since {text!r}: not a time; use e.g. today, yesterday, 10m, 2h, 2026-12-02 or "
                           "'2026-12-02 13:00'") from None
    return when if when.tzinfo else when.astimezone()  # naive: the machine's local time


def format_short(record: Mapping[str, Any], utc: bool = False) -> str:
    """One line per record: time, camera, type, short id, what the record adds."""
    when = parse_time(record.get("emitted_at")) or parse_time(record.get("start_time"))
    stamp = (when.astimezone(timezone.utc) if utc else when.astimezone()).strftime("%Y-%m-%d %H:%M:%S") if when else "?"
    kind = str(record.get("type", "?"))
    fine = record.get("fine") if isinstance(record.get("fine"), Mapping) else None
    parts = [stamp, str(record.get("source", "?")), f"{kind:<6}", str(record.get("id", "?"))[:8]]
    peak = record.get("peak_score")
    if isinstance(peak, (int, float)):
        parts.append(f"peak {peak:.2f}")
    if fine and fine.get("class"):
        prob = fine.get("probs", {}).get(fine["class"]) if isinstance(fine.get("probs"), Mapping) else None
        parts.append(f"{fine['class']}" + (f" {100 * prob:.0f}%" if isinstance(prob, (int, float)) else ""))
    if kind == "end":
        start_s, end_s = record.get("start_s"), record.get("end_s")
        if isinstance(start_s, (int, float)) and isinstance(end_s, (int, float)):
            parts.append(f"{end_s - start_s:.1f} s")
        if record.get("clip"):
            parts.append(f"clip {record['clip']}")
    return "  ".join(parts)


def _matcher(since: Optional[datetime], cameras: List[str]) -> Callable[[Mapping[str, Any]], bool]:
    def keep(record: Mapping[str, Any]) -> bool:
        if cameras and record.get("source") not in cameras:
            return False
        if since is not None:
            when = parse_time(record.get("emitted_at"))
            if when is None or when < since:
                return False
        return True

    return keep


def stop_on_signals() -> Callable[[], bool]:
    """Ctrl-C (SIGINT) and SIGTERM end a follow at its next poll, exit 0. Installed explicitly: a process started
    in the background of a non-interactive shell inherits SIGINT as ignored, and then Python raises no
    KeyboardInterrupt at all (seen as a follow that never ended under CI)."""
    import signal

    flag = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: flag.set())
    return flag.is_set


def events(events_dir: Path, since: Optional[str] = None, cameras: Optional[List[str]] = None, follow: bool = False,
           output: str = "short", utc: bool = False, out=None, stop: Optional[Callable[[], bool]] = None) -> int:
    """Print the matching records (then, with follow, new ones until interrupted); returns how many."""
    if output not in OUTPUTS:
        raise EdgeVadError(f"--output {output!r}: use one of {', '.join(OUTPUTS)}")
    path = Path(events_dir) if Path(events_dir).suffix == ".jsonl" else Path(events_dir) / EVENTS_FILE
    if not follow and not path.is_file():
        raise EdgeVadError(f"{path}: no such file; pass the events folder of a run (`edge-vad run --events-dir`), "
                           "or --follow to wait for it")
    keep = _matcher(parse_since(since) if since else None, list(cameras or []))
    out = out or sys.stdout
    tail = JsonlTail(path)
    shown = 0

    def show(records: List[Dict[str, Any]]) -> None:
        nonlocal shown
        for record in records:
            if keep(record):
                line = format_short(record, utc) if output == "short" else _json_line(record)
                out.write(line + "\n")
                shown += 1
        out.flush()

    show(tail.read_new())
    if follow and stop is None:
        stop = stop_on_signals()
    if not follow:
        if tail.pending_bytes:
            log.warning("%s: skipping a torn final line (%d bytes)", path, tail.pending_bytes)
        return shown
    while not (stop and stop()):
        time.sleep(FOLLOW_POLL_S)
        show(tail.read_new())
    return shown


def _json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
