"""A video file is decoded ahead in its own thread: bounded, in order, closed promptly, errors reach the reader."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vad.sources import SourceState, VideoFileSource, open_source
from edge_vad.sources.video_file import DECODE_AHEAD_FRAMES, DECODER_THREADS, open_capture

FRAMES = 30


@pytest.fixture()
def ramp_mp4(tmp_path: Path) -> Path:
    path = tmp_path / "ramp.mp4"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(FRAMES):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()
    return path


@pytest.fixture()
def decoded(monkeypatch):
    """Records (thread name, frame index) of every frame the source decodes."""
    seen = []
    real = VideoFileSource._decode_next

    def spy(self):
        frame = real(self)
        if frame is not None:
            seen.append((threading.current_thread().name, frame.index))
        return frame

    monkeypatch.setattr(VideoFileSource, "_decode_next", spy)
    return seen


def _settle(seen, count: int, timeout_s: float = 5.0) -> None:
    """Wait until `seen` stops growing for a moment (the decoder filled its queue and waits)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        if len(seen) == last and last >= count:
            return
        last = len(seen)
        time.sleep(0.1)


def test_decoding_runs_in_its_own_thread_a_bounded_number_of_frames_ahead(ramp_mp4: Path, decoded):
    with open_source(str(ramp_mp4)) as src:
        first = src.read()
        _settle(decoded, 2)
        ahead = len(decoded) - 1
        # the queue holds DECODE_AHEAD_FRAMES; the decoder may hold one more it is waiting to hand over
        assert 1 <= ahead <= DECODE_AHEAD_FRAMES + 1
        rest = list(src.frames())
        assert src.state is SourceState.ENDED
    frames = [first] + rest
    assert [f.index for f in frames] == list(range(FRAMES))
    assert all(abs(float(f.image.mean()) - 8 * f.index) < 4 for f in frames), "frames out of order"
    assert {name for name, _ in decoded} == {"edge-vad-decode-ramp"}
    assert [i for _, i in decoded] == list(range(FRAMES))


def test_close_mid_file_stops_the_decoder(ramp_mp4: Path, decoded):
    src = open_source(str(ramp_mp4))
    src.read()
    _settle(decoded, 2)
    src.close()
    assert not any(t.name == "edge-vad-decode-ramp" and t.is_alive() for t in threading.enumerate())
    assert src.state is SourceState.ENDED and src.read() is None
    assert len(decoded) <= 1 + DECODE_AHEAD_FRAMES + 1  # nothing was decoded after the reader stopped


def test_a_decoding_error_reaches_the_reader_after_the_frames_before_it(ramp_mp4: Path, monkeypatch):
    real = VideoFileSource._decode_next

    def failing(self):
        frame = real(self)
        if frame is not None and frame.index == 3:
            raise RuntimeError("decoder broke")
        return frame

    monkeypatch.setattr(VideoFileSource, "_decode_next", failing)
    with open_source(str(ramp_mp4)) as src:
        got = [src.read() for _ in range(3)]
        with pytest.raises(RuntimeError, match="decoder broke"):
            src.read()
        assert src.state is SourceState.ENDED and src.read() is None
    assert [f.index for f in got] == [0, 1, 2]


def test_files_are_decoded_on_one_ffmpeg_thread(ramp_mp4: Path):
    if getattr(cv2, "CAP_PROP_N_THREADS", None) is None:
        pytest.skip(f"OpenCV {cv2.__version__} cannot set FFmpeg's threads (CAP_PROP_N_THREADS is 4.6+)")
    cap = open_capture(ramp_mp4)
    try:
        assert cap.isOpened() and cap.get(cv2.CAP_PROP_N_THREADS) == DECODER_THREADS
    finally:
        cap.release()
