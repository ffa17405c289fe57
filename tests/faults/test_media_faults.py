"""Case 9 of issue 14, the media parts: a variable-frame-rate file keeps each frame's own time, and a JPEG cut
short in an image folder is skipped with a warning instead of being scored as a grey-padded picture."""

from __future__ import annotations

import fractions
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_vad.sources import open_source

TIMES_MS = [0, 40, 80, 500, 540, 1500, 1540, 1580]  # bursts and pauses: no constant rate fits


def _write_vfr(path: Path) -> Path:
    av = pytest.importorskip("av", reason="needs PyAV (the dev extra) to write a variable-frame-rate video")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        for i, t in enumerate(TIMES_MS):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 30, np.uint8), format="bgr24")
            frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_variable_frame_rate_file_gets_each_frames_own_time(tmp_path: Path) -> None:
    path = _write_vfr(tmp_path / "vfr.mkv")
    with open_source(str(path)) as src:
        frames = list(src.frames())
        assert src.stats.frames_missing == 0  # the announced count (duration x 25 fps) is not "damage"
    assert [f.index for f in frames] == list(range(len(TIMES_MS)))
    assert [f.timestamp_s for f in frames] == pytest.approx([t / 1000 for t in TIMES_MS], abs=1e-3)


def test_variable_frame_rate_file_loops_with_a_continuing_clock(tmp_path: Path) -> None:
    path = _write_vfr(tmp_path / "vfr.mkv")
    with open_source(str(path), loop=True) as src:
        frames = [src.read() for _ in range(len(TIMES_MS) + 2)]
    times = [f.timestamp_s for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[len(TIMES_MS)] == pytest.approx(TIMES_MS[-1] / 1000 + 1 / 25, abs=1e-3)  # one frame after the last
    assert times[len(TIMES_MS) + 1] - times[len(TIMES_MS)] == pytest.approx(0.040, abs=1e-3)


def test_half_cut_jpeg_in_a_folder_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        img = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (5, 5), 2)
        assert cv2.imwrite(str(tmp_path / f"{i:03d}.jpg"), img)
    cut = tmp_path / "002.jpg"
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # an interrupted copy
    assert cv2.imread(str(cut)) is not None  # libjpeg pads it: imread alone would score a half-grey frame
    with caplog.at_level(logging.WARNING, logger="edge_vad.sources"), open_source(str(tmp_path)) as src:
        frames = list(src.frames())
        assert src.stats.decode_errors == 1
    assert [f.index for f in frames] == [0, 1, 3]  # frame numbers stay aligned with the files
    assert any("truncated JPEG" in r.getMessage() and "002.jpg" in r.getMessage() for r in caplog.records)
