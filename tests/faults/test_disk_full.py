"""Case 1 of issue 14, the writers on a disk that really fills up (a 2 MB tmpfs): every file a record points to is
whole under its final name or absent, and events.jsonl lines are whole or absent."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vad.runtime.clips import ClipRecorder
from edge_vad.runtime.events import EventBuilder, EventSinks, JsonlEventWriter, read_events
from edge_vad.runtime.outputs import OutputLedger
from edge_vad.sources.base import Frame
from edge_vad_test_support.faults import fill_up, small_tmpfs


@pytest.fixture()
def disk(tmp_path: Path):
    with small_tmpfs(tmp_path / "disk", "2m") as mount:
        yield mount


def _big_event(i: int):
    b = EventBuilder("cam", i, float(i))
    b.update({"class": "riot", "probs": {"riot": 1.0}, "description": "x" * 700})
    return b.update()


def test_jsonl_lines_are_whole_or_absent_on_enospc_and_written_once_space_returns(disk: Path, caplog) -> None:
    path = disk / "events.jsonl"
    ledger = OutputLedger()
    writer = JsonlEventWriter(path, ledger=ledger)
    sinks = EventSinks([writer], ledger=ledger)
    fill_up(disk, leave_bytes=8192)  # room for a few lines (tmpfs counts 4 KiB pages), then a short write
    events = [_big_event(i) for i in range(12)]
    with caplog.at_level(logging.ERROR, logger="edge_vad.outputs"):
        failed = [sinks.emit(e) for e in events]
    assert any(failed), "the disk never filled up"
    assert writer.unwritten > 0
    data = path.read_bytes()
    assert data.endswith(b"\n")  # no torn line: the part of a line that fitted was taken back
    written = [json.loads(line) for line in data.splitlines()]
    assert [e["start_frame"] for e in written] == list(range(len(written)))
    assert any("events.jsonl" in r.getMessage() or "jsonl" in r.getMessage() for r in caplog.records)
    assert ledger.failures.get("events_jsonl", 0) > 0 and ledger.lost_total() == 0  # kept, not lost (yet)
    (disk / "filler.bin").unlink()  # space comes back: the kept lines go out, in order, with the next event
    sinks.emit(_big_event(12))
    writer.close()
    assert [e["start_frame"] for e in read_events(path)] == list(range(13))
    assert ledger.lost_total() == 0


def test_jsonl_lines_still_unwritten_at_close_are_counted_lost(disk: Path) -> None:
    path = disk / "events.jsonl"
    ledger = OutputLedger()
    writer = JsonlEventWriter(path, ledger=ledger)
    fill_up(disk, leave_bytes=0)
    with pytest.raises(OSError):
        writer.emit(_big_event(0))
    writer.close()
    assert path.read_bytes() == b""
    assert ledger.lost == {"events_jsonl": 1}


def _frames(n: int, fps: float):
    rng = np.random.default_rng(0)
    for i in range(n):  # noise compresses badly: a few seconds overflow 2 MB
        yield Frame(rng.integers(0, 256, (180, 320, 3), dtype=np.uint8), i, i / fps, "cam")


def test_clip_that_does_not_fit_is_never_saved_under_its_final_name(disk: Path) -> None:
    fps = 10.0
    rec = ClipRecorder(0.5, 0.5, fps, disk / "clips")
    fill_up(disk, leave_bytes=64 * 1024)  # a clip of noise needs far more than that
    done = []
    for frame in _frames(60, fps):
        done += rec.push(frame)
        if frame.index == 5:
            final = rec.start("ev1", frame.timestamp_s)
        if frame.index == 50:
            rec.stop("ev1", frame.timestamp_s)
    done += rec.close(30)
    (clip,) = [c for c in done if c.name == "ev1"]
    assert clip.path is None and not clip.complete
    assert "disk" in clip.error or "space" in clip.error, clip.error
    assert not final.exists()
    assert not list((disk / "clips").glob("*.partial.mp4"))  # the broken partial is removed, space given back


def test_clip_that_fits_is_whole_and_playable(disk: Path) -> None:
    fps = 10.0
    rec = ClipRecorder(0.2, 0.2, fps, disk / "clips")
    done = []
    small = (Frame(np.full((72, 128, 3), i * 8 % 256, np.uint8), i, i / fps, "cam") for i in range(20))
    for frame in small:
        done += rec.push(frame)
        if frame.index == 2:
            rec.start("ev2", frame.timestamp_s)
        if frame.index == 10:
            rec.stop("ev2", frame.timestamp_s)
    done += rec.close(30)
    (clip,) = done
    assert clip.path is not None and clip.complete and clip.error == ""
    cap = cv2.VideoCapture(str(clip.path))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == clip.frames
    cap.release()
