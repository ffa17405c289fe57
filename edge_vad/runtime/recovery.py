"""Leftovers of a crashed run (SIGKILL, OOM kill, power cut), cleaned up when the next run starts.

    report = recover(events_dir, clips_dir, emit=sinks.emit)    # after the sinks are open, before the pipelines

- `<clips>/<id>.partial.mp4`: the clip writer died before the rename. If the file opens and its index
  lists frames (the crash came between the last write and the rename), it is whole: renamed to
  `<id>.mp4`. Otherwise (no MP4 index: the usual case for a killed writer) it is removed.
- events.jsonl: an event with a `start` and no `end` (the run died while it was open) gets an end record
  now, through the normal sinks (JSONL, MQTT, stdout): `end_reason: "crash_recovered"`, `end_frame` and
  `end_s` null (unknown), `end_time` = the last record's `emitted_at` (the last moment it was known to be
  open), the last known scores and fine result, the clip if one was recovered (else `clip: null` and a
  `clip_error`).
Only the last RECOVERY_SCAN_BYTES of events.jsonl are read: the open events of the run that crashed are
near its end, and a file of months of events is not read whole at every start.
Each action is one WARNING line, so the operator sees what the crash left and what was done with it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from edge_vad.runtime.clips import FINAL_SUFFIX, PARTIAL_SUFFIX, playable_frames
from edge_vad.runtime.events import END_CRASH_RECOVERED, Event, iso_utc, utc_now

log = logging.getLogger("edge_vad.recovery")

RECOVERY_SCAN_BYTES = 8 << 20  # tail of events.jsonl searched for open events
_EVENT_FIELDS = {f.name for f in dataclasses.fields(Event)}


@dataclass
class RecoveryReport:
    clips_finished: List[Path] = field(default_factory=list)
    clips_removed: List[Path] = field(default_factory=list)
    events_closed: List[str] = field(default_factory=list)


def recover(events_dir: Path, clips_dir: Optional[Path], emit: Callable[[Event], Any]) -> RecoveryReport:
    report = RecoveryReport()
    if clips_dir is not None and clips_dir.is_dir():
        _partial_clips(clips_dir, report)
    jsonl = events_dir / "events.jsonl"
    if jsonl.is_file():
        for record in open_events(jsonl):
            clip = clips_dir / f"{record['id']}{FINAL_SUFFIX}" if clips_dir is not None else None
            event = crash_end_record(record, clip if clip is not None and clip.is_file() else None)
            emit(event)
            report.events_closed.append(event.id)
            log.warning("event %s of source '%s' was still open when the last run crashed; closed now with "
                        "end_reason crash_recovered (clip: %s)", event.id, event.source, event.clip or "none")
    return report


def _partial_clips(clips_dir: Path, report: RecoveryReport) -> None:
    for partial in sorted(clips_dir.glob(f"*{PARTIAL_SUFFIX}")):
        final = partial.with_name(partial.name[: -len(PARTIAL_SUFFIX)] + FINAL_SUFFIX)
        frames = playable_frames(partial)
        try:
            if frames > 0 and not final.exists():
                os.replace(partial, final)
                report.clips_finished.append(final)
                log.warning("clip %s was left unfinished by a crashed run; it is playable (%d frames): kept as %s",
                            partial.name, frames, final.name)
            else:
                os.unlink(partial)
                report.clips_removed.append(partial)
                log.warning("clip %s was left unfinished by a crashed run and cannot be played (no MP4 index); "
                            "removed", partial)
        except OSError as exc:
            log.error("clip %s left by a crashed run could not be cleaned up (%s); remove it by hand", partial, exc)


def open_events(jsonl: Path) -> List[Dict[str, Any]]:
    """The last record of each event in the tail of `jsonl` that has a start and no end, in file order."""
    with open(jsonl, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - RECOVERY_SCAN_BYTES))
        data = fh.read()
    lines = data.split(b"\n")
    if size > RECOVERY_SCAN_BYTES:
        lines = lines[1:]  # the first line of the window is most likely cut
    last: Dict[str, Dict[str, Any]] = {}
    for raw in lines:
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # blank or torn line (the reader skips those too)
        if not isinstance(record, dict) or "id" not in record:
            continue
        if record.get("type") == "start":
            last[record["id"]] = record
        elif record["id"] in last:
            if record.get("type") == "end":
                del last[record["id"]]
            else:
                last[record["id"]] = record
    return list(last.values())


def crash_end_record(last: Dict[str, Any], clip: Optional[Path]) -> Event:
    fields = {k: v for k, v in last.items() if k in _EVENT_FIELDS}
    fields.update(type="end", seq=int(last.get("seq", 0)) + 1, emitted_at=iso_utc(utc_now()),
                  end_frame=None, end_s=None, end_time=last.get("emitted_at"), end_reason=END_CRASH_RECOVERED,
                  clip=str(clip) if clip is not None else None,
                  clip_error=None if clip is not None else "the run crashed before the clip was finished")
    return Event(**fields)
