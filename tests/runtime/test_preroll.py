"""The clip pre-roll ring (edge_vad.runtime.preroll) and the clip recorder on it: bounded memory, frames in order,
lent frames never overwritten, and no encoding (nor any per-frame allocation) while no event is open."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from edge_vad.errors import EdgeVadError
from edge_vad.runtime.clips import ClipRecorder
from edge_vad.runtime.preroll import PreRollRing, i420_bytes, ring_frame_size
from edge_vad.sources.base import Frame

MIB = 2**20


def _image(i: int, size=(64, 48)) -> np.ndarray:
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[:] = (i * 7) % 256  # a distinct grey per frame
    img[: size[1] // 4, : size[0] // 4] = (255 - (i * 7) % 256, 0, 0)  # and a coloured corner
    return img


def _grey(frame) -> float:
    """The grey level of a ring frame, read back through BGR."""
    bgr = frame.bgr()
    h, w = bgr.shape[:2]
    return float(bgr[h // 2:, w // 2:].mean())


@pytest.mark.parametrize("source, capacity, budget_mb, expected", [
    ((640, 360), 122, 48, (640, 360, 1)),     # 41 MiB: kept whole
    ((1280, 720), 122, 48, (640, 360, 2)),    # 1280x720 would take 161 MiB
    ((1920, 1080), 122, 48, (640, 360, 3)),
    ((641, 361), 10, 48, (640, 360, 1)),      # odd sides lose a row and a column (I420 needs even ones)
    ((640, 360), 122, 20, (320, 180, 2)),
])
def test_frame_size_is_the_first_integer_factor_that_fits(source, capacity, budget_mb, expected):
    w, h, k = ring_frame_size(*source, capacity, budget_mb * MIB)
    assert (w, h, k) == expected
    assert i420_bytes(w, h) * capacity <= budget_mb * MIB
    if k > 1:  # the next larger factor would not have fitted
        assert i420_bytes(source[0] // (k - 1) // 2 * 2, source[1] // (k - 1) // 2 * 2) * capacity > budget_mb * MIB


def test_max_side_and_a_budget_too_small_for_any_picture():
    assert ring_frame_size(1280, 720, 10, 48 * MIB, max_side=400)[:2] == (320, 180)
    with pytest.raises(EdgeVadError, match="clip_pre_roll_mb"):
        ring_frame_size(640, 360, 1000, 100_000)


def test_ring_keeps_the_newest_frames_in_order_within_its_bound():
    budget = 2 * MIB
    ring = PreRollRing(capacity=20, budget_bytes=budget)
    for i in range(50):
        size = (256, 144) if i < 30 else (320, 240)  # the camera changes mode at frame 30
        ring.push(i, i / 10, _image(i, size))
        assert len(ring) <= 20 and ring.nbytes <= budget
    frames = ring.frames()
    assert [f.index for f in frames] == list(range(30, 50))
    assert all(f.size == ring.size == (256, 144) for f in frames)  # resized to the size the ring started with
    assert [round(_grey(f)) for f in frames] == pytest.approx([(i * 7) % 256 for i in range(30, 50)], abs=2)
    assert [f.index for f in ring.since(4.45)] == list(range(45, 50))


def test_lent_frames_are_never_written_over():
    ring = PreRollRing(capacity=4, budget_bytes=MIB)
    for i in range(4):
        ring.push(i, float(i), _image(i))
    lent = ring.since(2.0)  # frames 2 and 3 go to a clip
    before = [f.i420.copy() for f in lent]
    for i in range(4, 20):  # the ring comes round twice
        ring.push(i, float(i), _image(i))
    for f, pixels in zip(lent, before):
        np.testing.assert_array_equal(f.i420, pixels)
    assert [f.index for f in ring.frames()] == [16, 17, 18, 19]


def test_no_encoding_and_no_allocation_per_frame_while_no_event_is_open(tmp_path, monkeypatch):
    calls = {"imencode": 0, "VideoWriter": 0}
    real_imencode, real_writer = cv2.imencode, cv2.VideoWriter

    def imencode(*a, **k):
        calls["imencode"] += 1
        return real_imencode(*a, **k)

    def writer(*a, **k):
        calls["VideoWriter"] += 1
        return real_writer(*a, **k)

    monkeypatch.setattr(cv2, "imencode", imencode)
    monkeypatch.setattr(cv2, "VideoWriter", writer)
    frames = [Frame(image=_image(i, (1280, 720)), index=i, timestamp_s=i / 25, source="cam") for i in range(8)]
    rec = ClipRecorder(pre_roll_s=1.0, post_roll_s=1.0, fps=25.0, out_dir=tmp_path, lookback_s=0.5)
    try:
        for i in range(2 * rec.capacity):  # the first lap fills the ring's buffers
            rec.push(Frame(frames[i % 8].image, i, i / 25, "cam"))
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(2 * rec.capacity, 3 * rec.capacity):
            rec.push(Frame(frames[i % 8].image, i, i / 25, "cam"))
        grown = tracemalloc.get_traced_memory()[1] - base  # the PEAK: any frame buffer allocated on the way shows
        tracemalloc.stop()
        w, h = rec.frame_size
        assert (w, h) == (640, 360)  # 1280x720 / 2 fits the default 48 MiB
        assert grown < i420_bytes(w, h) // 4, f"{grown} bytes allocated over {rec.capacity} frames"
        assert calls == {"imencode": 0, "VideoWriter": 0} and rec._jobs.qsize() == 0
        assert rec.buffered_frames == rec.capacity and rec.buffered_bytes <= 48 * MIB
        # an event opens: now (and only now) the writer encodes the pre-roll, at the ring's size
        rec.start("ev", start_t=(3 * rec.capacity - 1) / 25)
        rec.stop("ev", end_t=(3 * rec.capacity - 1) / 25)
        (clip,) = rec.flush()
        assert calls["VideoWriter"] == 1 and calls["imencode"] == 0
        cap = cv2.VideoCapture(str(clip.path))
        ok, first = cap.read()
        cap.release()
        assert ok and first.shape == (360, 640, 3) and clip.frames == 26  # 1 s of pre-roll at 25 fps + the frame
    finally:
        rec.close()
