"""The review page's data: the JSONL tail reader, the event index, the feedback log, the live state, and
browser copies of clips."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vad.review import live as live_module
from edge_vad.review.event_index import EventIndex
from edge_vad.review.feedback import FEEDBACK_SCHEMA_VERSION, FeedbackLog, latest_verdicts
from edge_vad.review.jsonl_tail import JsonlTail
from edge_vad.review.live import LiveState
from edge_vad.review.media import BrowserClips, ClipError
from edge_vad.runtime.events import EventBuilder, JsonlEventWriter, read_events


def record(event_id: str, kind: str, seq: int, source: str = "cam", start: str = "2026-12-02T10:00:00.000+00:00",
           cls=None) -> dict:
    fine = {"class": cls, "probs": {cls: 1.0}, "description": "", "top_snippets": []} if cls else None
    return {"id": event_id, "type": kind, "seq": seq, "source": source, "start_time": start,
            "emitted_at": start, "peak_score": 0.5 + seq / 10, "fine": fine, "clip": None, "snapshot": None}


def append(path: Path, *lines) -> None:
    with open(path, "ab") as fh:
        for line in lines:
            fh.write(line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode())


# ----------------------------------------------------------------------------- tail
def test_tail_reads_only_complete_lines_and_skips_torn_ones(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == []  # no file yet
    append(path, record("a", "start", 0), b'{"id": "b", "ty')  # the second line is being written
    assert [r["id"] for r in tail.read_new()] == ["a"]
    assert tail.pending_bytes == len(b'{"id": "b", "ty')
    assert tail.read_new() == []
    append(path, b'pe": "start", "seq": 0, "source": "cam"}\n')  # ... and finished
    assert [r["id"] for r in tail.read_new()] == ["b"]
    # a torn line the writer terminated on restart (JsonlEventWriter) is skipped, the next one read
    append(path, b'{"id": "c", "ty')
    JsonlEventWriter(path, fsync=False).close()
    append(path, record("d", "start", 0))
    assert [r["id"] for r in tail.read_new()] == ["d"]
    assert [r["id"] for r in read_events(path)] == ["a", "b", "d"]  # the same as the batch reader
    path.write_text(json.dumps(record("e", "start", 0)) + "\n")  # replaced by a shorter file
    assert [r["id"] for r in tail.read_new()] == ["e"]


# ----------------------------------------------------------------------------- index
def test_index_keeps_the_newest_record_and_filters(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    append(path, record("a1", "start", 0, "door", "2026-12-01T23:30:00.000+00:00"),
           record("b2", "start", 0, "yard", "2026-12-02T08:00:00.000+00:00"),
           record("a1", "update", 1, "door", "2026-12-01T23:30:00.000+00:00", cls="fighting"),
           record("a1", "end", 2, "door", "2026-12-01T23:30:00.000+00:00", cls="fighting"),
           record("a1", "update", 1, "door", "2026-12-01T23:30:00.000+00:00"),  # late and older: ignored
           {"id": "../x", "type": "start", "seq": 0, "source": "door"},  # ids look like ids, or are skipped
           {"id": "c3", "type": "start", "seq": 0})  # no source
    index = EventIndex(tmp_path)
    index.refresh()
    assert len(index) == 2
    rows = index.query()
    assert [r["id"] for r in rows] == ["b2", "a1"]  # newest first
    a1 = rows[1]
    assert a1["state"] == "ended" and a1["class"] == "fighting" and a1["peak_score"] == pytest.approx(0.7)
    assert [r["id"] for r in index.query(camera="door")] == ["a1"]
    assert [r["id"] for r in index.query(cls="fighting")] == ["a1"]
    assert index.query(cls="riot") == []
    # days in the viewer's zone: a1 started 23:30 UTC on the 1st = 00:30 on the 2nd in UTC+1 (offset -60)
    assert [r["id"] for r in index.query(day="2026-12-01")] == ["a1"]
    assert {r["id"] for r in index.query(day="2026-12-02", tz_offset_min=-60)} == {"a1", "b2"}
    assert index.query(day="2026-12-03") == []
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        index.query(day="yesterday")
    assert index.facets() == {"cameras": ["door", "yard"], "classes": ["fighting"]}
    append(path, record("b2", "end", 1, "yard", "2026-12-02T08:00:00.000+00:00"))
    index.refresh()
    assert index.get("b2")["type"] == "end" and index.get("b2")["verdict"] is None
    assert index.get("nope") is None


# ----------------------------------------------------------------------------- feedback
def test_feedback_lines_are_whole_and_the_last_mark_counts(tmp_path: Path):
    b = EventBuilder("door", 10, 1.0, event_id="ev-1")
    b.add_score(0.8)
    event = b.end(20, 2.0, fine={"class": "fighting", "probs": {"fighting": 1.0}}, clip="c.mp4")
    log = FeedbackLog(tmp_path)
    marks = [threading.Thread(target=log.mark, args=(event.to_dict(), v, "n" * 300))
             for v in ("false_alarm", "confirmed") * 20]
    for t in marks:
        t.start()
    for t in marks:
        t.join()
    last = log.mark(event.to_dict(), "false_alarm", "a shadow")
    log.close()
    lines = (tmp_path / "feedback.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 42
    records = [json.loads(line) for line in lines[:-1]]  # every line parses: none interleaved
    assert records[-1] == last
    assert set(last) == {"schema", "event_id", "source", "verdict", "note", "marked_at", "by", "event"}
    assert last["schema"] == FEEDBACK_SCHEMA_VERSION and last["event_id"] == "ev-1" and last["source"] == "door"
    assert last["event"]["class"] == "fighting" and last["event"]["end_frame"] == 20 and last["event"]["clip"] == "c.mp4"
    assert latest_verdicts(records)["ev-1"]["note"] == "a shadow"
    with pytest.raises(ValueError, match="verdict"):
        log.mark(event.to_dict(), "probably")
    with pytest.raises(ValueError, match="note"):
        log.mark(event.to_dict(), "confirmed", "x" * 501)


def test_feedback_reaches_the_index(tmp_path: Path):
    append(tmp_path / "events.jsonl", record("a1", "end", 2))
    index = EventIndex(tmp_path)
    index.refresh()
    FeedbackLog(tmp_path).mark(index.get("a1"), "false_alarm")
    index.refresh()
    assert index.query()[0]["verdict"] == "false_alarm" and index.get("a1")["verdict"]["verdict"] == "false_alarm"


# ----------------------------------------------------------------------------- live state
class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_live_state_keeps_few_frames_and_encodes_only_on_request(monkeypatch):
    encodes = []
    real = live_module.encode_jpeg
    monkeypatch.setattr(live_module, "encode_jpeg", lambda image, q: encodes.append(1) or real(image, q))
    clock = Clock()
    live = LiveState(clock=clock, wall=lambda: 1000.0 + clock.t, frame_every_s=0.25, history_s=10,
                     history_step_s=1.0)
    live.add_camera("cam", 0.6, 0.4)
    assert live.frame_jpeg("cam") is None and live.latest("cam") is None
    image = np.zeros((36, 64, 3), np.uint8)
    for i in range(100):  # 100 frames at 16 fps (binary fractions: exact times) = 6.25 s
        image[:] = i
        live.update("cam", image, 0.9 if i == 37 else 0.1, gate_open=i >= 90)
        clock.t += 1 / 16
    assert encodes == []  # nothing encoded in the pipeline's calls
    cam = live.cameras()[0]
    assert cam["frame_seq"] == 25  # one frame kept per 0.25 s: frames 0, 4, ..., 96
    assert cam["gate_open"] is True and cam["score"] == pytest.approx(0.1)
    assert cam["on_threshold"] == 0.6 and cam["off_threshold"] == 0.4
    scores = [s for _, s in cam["history"]]
    assert len(scores) == 7 and scores[2] == pytest.approx(0.9)  # one point per second: its maximum (frame 37)
    assert scores[:2] + scores[3:] == pytest.approx([0.1] * 6)
    seq, data = live.frame_jpeg("cam")
    assert seq == 25 and len(encodes) == 1
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (36, 64, 3) and abs(int(decoded.mean()) - 96) <= 2  # the frame kept at i = 96
    image[:] = 255  # the caller reusing its array does not change the kept frame
    assert live.frame_jpeg("cam") == (seq, data) and len(encodes) == 1  # cached until a newer frame
    for _ in range(400):  # history stays bounded (10 s)
        live.update("cam", None, 0.2, False)
        clock.t += 1 / 16
    assert len(live.cameras()[0]["history"]) <= 11
    live.update("cam", None, float("nan"), False)  # finish() gives NaN: ignored
    assert live.latest("cam") == (pytest.approx(0.2), False)


# ----------------------------------------------------------------------------- clips for browsers
def _mp4v_clip(path: Path, frames: int = 12) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    return path


def test_mp4v_clips_get_a_webm_copy_once(tmp_path: Path):
    clip = _mp4v_clip(tmp_path / "ev1.mp4")
    before = clip.read_bytes()
    clips = BrowserClips(tmp_path / "cache")
    path, ctype = clips.playable("ev1", clip, timeout_s=60)
    assert ctype == "video/webm" and path == tmp_path / "cache" / "ev1.webm"
    assert path.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a Matroska / WebM file
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FOURCC) and int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 12) >= 1
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 12
    mtime = os.stat(path).st_mtime_ns
    assert clips.playable("ev1", clip, timeout_s=60) == (path, ctype) and os.stat(path).st_mtime_ns == mtime
    assert clip.read_bytes() == before  # the recorded clip is never changed
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name != "ev1.webm"]  # no temp file left
    broken = tmp_path / "ev2.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(ClipError):
        clips.playable("ev2", broken, timeout_s=60)
    clips.close()
