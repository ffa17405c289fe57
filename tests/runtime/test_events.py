"""Events (builder, JSONL writer and reader, fan-out), clips and heatmap snapshots."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vad.runtime.clips import ClipRecorder
from edge_vad.runtime.events import (
    EventBuilder, EventSinks, FineSummary, JsonlEventWriter, StdoutEventSink, read_events,
)
from edge_vad.runtime.snapshot import normalise, overlay, write_snapshot
from edge_vad.sources.base import Frame

REQUIRED_FIELDS = {"id", "type", "source", "start_frame", "end_frame", "start_time", "end_time", "start_s", "end_s",
                   "peak_score", "mean_score", "fine", "clip", "snapshot"}


def fixed_clock(start=datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)):
    ticks = iter(range(10_000))
    return lambda: start + timedelta(seconds=next(ticks))


def make_event_sequence():
    b = EventBuilder("cam-1", start_frame=30, start_s=1.5, clock=fixed_clock())
    b.add_scores([0.7, 0.9, 0.8])
    start = b.start()
    b.add_score(0.6)
    fine = FineSummary("fighting", {"normal": 0.1, "fighting": 0.9}, "two people fighting", [2, 0])
    update = b.update(fine)
    end = b.end(end_frame=75, end_s=3.75, clip="clips/x.mp4", snapshot="snaps/x.jpg")
    return b, start, update, end


# ------------------------------------------------------------------ lifecycle and JSON form
def test_lifecycle_fields_and_statistics():
    b, start, update, end = make_event_sequence()
    for ev in (start, update, end):
        d = json.loads(ev.to_json())
        assert REQUIRED_FIELDS <= set(d)
        assert d["id"] == b.id and d["source"] == "cam-1" and d["start_frame"] == 30 and d["start_s"] == 1.5
    assert [e.type for e in (start, update, end)] == ["start", "update", "end"]
    assert [e.seq for e in (start, update, end)] == [0, 1, 2]
    assert start.end_frame is None and start.end_time is None and start.end_s is None and start.fine is None
    assert start.peak_score == 0.9 and start.mean_score == pytest.approx(0.8)
    assert update.fine == {"class": "fighting", "probs": {"normal": 0.1, "fighting": 0.9},
                           "description": "two people fighting", "top_snippets": [2, 0]}
    assert end.mean_score == pytest.approx(0.75) and end.frames == 4
    assert (end.end_frame, end.end_s, end.clip, end.snapshot) == (75, 3.75, "clips/x.mp4", "snaps/x.jpg")
    assert end.fine == update.fine  # kept from the update
    # wall clock: ISO 8601 UTC, parseable, end after start
    t0, t1 = datetime.fromisoformat(end.start_time), datetime.fromisoformat(end.end_time)
    assert t0.utcoffset() == timedelta(0) and t1 > t0
    with pytest.raises(RuntimeError, match="already ended"):
        b.end(80, 4.0)


def test_fine_dict_must_name_class_and_probs():
    b = EventBuilder("cam", 0, 0.0)
    with pytest.raises(ValueError, match="class"):
        b.update({"probs": {"a": 1.0}})
    assert b.update({"class": "riot", "probs": {"riot": 1.0}}).fine["top_snippets"] == []


def test_ids_are_unique():
    assert len({EventBuilder("cam", 0, 0.0).id for _ in range(100)}) == 100


# ------------------------------------------------------------------ JSONL writer / reader
def test_jsonl_roundtrip_one_line_per_event(tmp_path):
    _, *events = make_event_sequence()
    path = tmp_path / "sub" / "events.jsonl"
    with JsonlEventWriter(path) as w:
        for ev in events:
            w.emit(ev)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    assert read_events(path) == [ev.to_dict() for ev in events]


def test_reader_skips_a_torn_final_line_and_writer_repairs_it(tmp_path):
    _, start, update, end = make_event_sequence()
    path = tmp_path / "events.jsonl"
    with JsonlEventWriter(path) as w:
        w.emit(start)
    with open(path, "ab") as fh:  # what a power cut inside a write leaves
        fh.write(update.to_json().encode()[:40])
    assert [e["type"] for e in read_events(path)] == ["start"]
    with JsonlEventWriter(path) as w:  # on reopen the torn line is terminated...
        w.emit(end)
    assert [e["type"] for e in read_events(path)] == ["start", "end"]  # ...so `end` is not glued to it


def test_killed_writer_leaves_only_whole_events(tmp_path):
    """SIGKILL a process that appends events as fast as it can: every newline-terminated line
    is a whole event; at most the final line is torn (a kill inside the kernel's copy), and
    the next writer and the reader cope with it."""
    path = tmp_path / "events.jsonl"
    code = textwrap.dedent(f"""
        from edge_vad.runtime.events import EventBuilder, JsonlEventWriter
        w = JsonlEventWriter({str(path)!r}, fsync=False)
        b = EventBuilder("cam", 0, 0.0)
        b.update({{"class": "riot", "probs": {{"riot": 1.0}}, "description": "x" * 1000}})
        print("go", flush=True)
        while True:
            w.emit(b.update())
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "go"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    whole = path.read_bytes().split(b"\n")[:-1]
    assert len(whole) > 10
    seqs = [json.loads(line)["seq"] for line in whole]  # every terminated line parses
    assert seqs == list(range(1, len(whole) + 1))  # in order, none lost in between
    with JsonlEventWriter(path) as w:
        w.emit(EventBuilder("cam", 0, 0.0).start())
    events = read_events(path)
    assert len(events) == len(whole) + 1 and events[-1]["type"] == "start"


def test_stdout_sink_writes_json_lines():
    buf = io.StringIO()
    _, start, *_ = make_event_sequence()
    StdoutEventSink(buf).emit(start)
    assert json.loads(buf.getvalue())["type"] == "start" and buf.getvalue().endswith("\n")


class _Broken:
    name = "broken"

    def emit(self, event):
        raise ConnectionError("broker gone")

    def close(self):
        raise OSError("already closed")


class _Collect:
    name = "collect"

    def __init__(self):
        self.got = []

    def emit(self, event):
        self.got.append(event)

    def close(self):
        pass


def test_fanout_counts_failures_and_keeps_delivering():
    collect = _Collect()
    seen = []
    sinks = EventSinks([_Broken(), collect], on_emit=seen.append)
    _, *events = make_event_sequence()
    failed = [sinks.emit(ev) for ev in events]
    assert failed == [1, 1, 1]
    assert collect.got == events and seen == events
    assert sinks.failures["broken"].count == 3 and "broker gone" in sinks.failures["broken"].last_error
    assert sinks.failures["collect"].count == 0
    sinks.close()  # a failing close does not raise either


# ------------------------------------------------------------------ snapshots
def test_overlay_colours_the_top_region_only_and_keeps_the_rest_of_the_frame():
    frame = np.full((120, 160, 3), 128, np.uint8)
    heat = np.zeros((7, 7), np.float32)
    heat[0, 6] = 1.0  # top-right corner hot
    out = overlay(frame, heat)
    assert out.shape == frame.shape and out.dtype == np.uint8
    top_right = out[8, 150].astype(int)
    assert top_right[2] > top_right[0] + 40  # tinted red inside the top region (BGR: R is channel 2)
    assert np.array_equal(out[60:, :100], frame[60:, :100])  # far from it the frame is untouched: no whole-frame tint
    assert np.array_equal(overlay(frame, np.zeros((7, 7))), frame)  # a flat map marks nothing
    assert np.array_equal(overlay(frame, heat, alpha=0.0)[40:, :], frame[40:, :])  # alpha 0: only the outline


def test_normalise_handles_flat_and_non_finite_maps():
    assert not normalise(np.full((4, 4), 3.0)).any()
    h = normalise(np.array([[0.0, np.nan], [2.0, 4.0]]))
    assert h[0, 1] == 0.0 and h[1, 1] == 1.0 and h[1, 0] == pytest.approx(0.5)
    assert normalise(np.array([[0.5, 2.0]]), value_range=(0.0, 1.0)).tolist() == [[0.5, 1.0]]
    with pytest.raises(ValueError, match="2-D"):
        normalise(np.zeros((2, 2, 2)))


def test_write_snapshot_is_atomic_and_readable(tmp_path):
    frame = np.full((90, 120, 3), 50, np.uint8)
    path = write_snapshot(tmp_path / "snaps" / "ev.jpg", frame, np.random.default_rng(0).random((7, 7)))
    img = cv2.imread(str(path))
    assert img.shape == frame.shape
    assert [p.name for p in path.parent.iterdir()] == ["ev.jpg"]  # no temp file left behind


# ------------------------------------------------------------------ clips
def _frames(n, fps=10.0, size=(64, 48)):
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:] = (i * 7) % 256  # distinct brightness per frame to identify frames after decoding
        yield Frame(image=img, index=i, timestamp_s=i / fps, source="cam")


def _read_video(path: Path):
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        out.append(float(img.mean()))
    cap.release()
    return out


def test_clip_has_pre_and_post_roll_and_appears_only_when_complete(tmp_path):
    fps = 10.0
    rec = ClipRecorder(pre_roll_s=1.0, post_roll_s=0.5, fps=fps, out_dir=tmp_path, lookback_s=0.5)
    finished = []
    final = None
    for frame in _frames(60, fps):
        finished += rec.push(frame)
        if frame.index == 25:  # the gate confirms at frame 25 an event that opened at frame 20
            final = rec.start("ev1", start_t=2.0)
        if frame.index == 35:
            rec.stop("ev1", end_t=3.5)
            assert not final.exists()  # still recording: only the .partial.mp4 may exist
    finished += rec.close()  # waits for the writer thread
    assert len(finished) == 1 and finished[0].complete and finished[0].path == final and not finished[0].error
    assert final.exists() and not rec.partial_path("ev1").exists()
    # frames 10 (2.0 - 1.0 s pre-roll) ... 40 (3.5 + 0.5 s post-roll), each exactly once
    assert finished[0].frames == 31 and finished[0].first_t == pytest.approx(1.0) and finished[0].last_t == pytest.approx(4.0)
    means = _read_video(final)
    assert len(means) == 31
    expected = [(i * 7) % 256 for i in range(10, 41)]
    # lossy mp4v (about -3 levels on these greys) + the I420 ring (a grey comes back at most 1 level off):
    # the same frames in order (neighbouring frames are 7 levels apart)
    assert np.allclose(means, expected, atol=4)


def test_ring_buffer_is_bounded_and_flush_finishes_open_clips(tmp_path):
    rec = ClipRecorder(pre_roll_s=0.5, post_roll_s=2.0, fps=10.0, out_dir=tmp_path)
    for frame in _frames(100):
        rec.push(frame)
    assert rec.buffered_frames == rec.capacity == 7
    final = rec.start("ev2", start_t=9.9)
    rec.stop("ev2", end_t=9.9)
    done = rec.flush()  # SIGTERM before the post-roll ran out
    assert [(c.path, c.complete) for c in done] == [(final, False)]
    assert len(_read_video(final)) == 6  # 9.4 .. 9.9 s
    assert rec.active == []


def test_clip_names_are_checked(tmp_path):
    rec = ClipRecorder(1.0, 1.0, 10.0, tmp_path)
    with pytest.raises(ValueError, match="file name"):
        rec.start("../evil", 0.0)
    rec.start("ok", 0.0)
    with pytest.raises(ValueError, match="already"):
        rec.start("ok", 0.0)
    with pytest.raises(ValueError, match="no clip"):
        rec.stop("missing", 1.0)
    (clip,) = rec.close()
    assert clip.path is None and not clip.complete and clip.error  # nothing pushed: no file is pretended


def test_slow_writer_drops_clip_frames_not_detection(tmp_path, monkeypatch):
    import threading

    import edge_vad.runtime.clips as clips

    monkeypatch.setattr(clips, "MAX_BACKLOG_S", 1.0)  # queue: ring (7) + 10 frames
    gate = threading.Event()
    real_write = clips.ClipRecorder._write

    def stuck_write(self, *args):
        gate.wait(10)  # the writer is stuck (slow disk) until released
        return real_write(self, *args)

    monkeypatch.setattr(clips.ClipRecorder, "_write", stuck_write)
    rec = clips.ClipRecorder(pre_roll_s=0.5, post_roll_s=0.0, fps=10.0, out_dir=tmp_path)
    frames = list(_frames(60))
    for frame in frames[:10]:
        rec.push(frame)
    rec.start("slow", start_t=0.9)
    t0 = time.perf_counter()
    for frame in frames[10:50]:
        rec.push(frame)  # never blocks on the stuck writer
    assert time.perf_counter() - t0 < 5
    assert rec.frames_dropped > 0
    gate.set()
    (clip,) = rec.close(timeout_s=30)
    assert clip.path.exists() and not clip.complete and "dropped" in clip.error
    assert clip.frames + rec.frames_dropped == 6 + 40  # pre-roll 0.4..0.9 s, then 40 pushed frames
