"""The clip pre-roll ring (edge_vad.runtime.preroll) and the clip recorder on it: bounded memory, frames in order,
lent frames never overwritten, and no encoding (nor any per-frame allocation) while no event is open."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from edge_vad.errors import EdgeVadError
from edge_vad.runtime.clips import ClipRecorder
from edge_vad.runtime.preroll import MAX_STRIDE, PreRollRing, i420_bytes, ring_frame_size, slots_for
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


@pytest.mark.parametrize("source, frames, budget_mb, expected", [
    ((640, 360), 122, 48, (640, 360, 1, 1)),     # 41 MiB: every frame, whole
    ((640, 360), 102, 24, (640, 360, 1, 2)),     # 35 MiB whole: every second frame (17 MiB) before shrinking
    ((1280, 720), 122, 48, (640, 360, 2, 1)),    # 1280x720 would take 161 MiB, 80 MiB at every second frame
    ((1280, 720), 122, 24, (640, 360, 2, 2)),
    ((1920, 1080), 122, 48, (960, 540, 2, 2)),   # resolution first: half the frame rate before a third the size
    ((641, 361), 10, 48, (640, 360, 1, 1)),      # odd sides lose a row and a column (I420 needs even ones)
    ((640, 360), 122, 11, (320, 180, 2, 1)),     # 10.5 MiB
])
def test_frame_size_is_the_first_integer_factor_and_stride_that_fit(source, frames, budget_mb, expected):
    w, h, k, stride = ring_frame_size(*source, frames, budget_mb * MIB)
    assert (w, h, k, stride) == expected
    assert i420_bytes(w, h) * slots_for(frames, stride) <= budget_mb * MIB
    if k > 1:  # the next larger size would not have fitted, even at every second frame
        bigger = i420_bytes(source[0] // (k - 1) // 2 * 2, source[1] // (k - 1) // 2 * 2)
        assert bigger * slots_for(frames, MAX_STRIDE) > budget_mb * MIB


def test_max_side_and_a_budget_too_small_for_any_picture():
    assert ring_frame_size(1280, 720, 10, 48 * MIB, max_side=400)[:2] == (320, 180)
    with pytest.raises(EdgeVadError, match="clip_pre_roll_mb"):
        ring_frame_size(640, 360, 1000, 100_000)


def test_ring_keeps_the_newest_frames_in_order_within_its_bound():
    budget = 2 * MIB
    ring = PreRollRing(frames=20, budget_bytes=budget)
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
    ring = PreRollRing(frames=4, budget_bytes=MIB)
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


def test_every_second_frame_when_the_bound_needs_it_and_the_clip_keeps_its_timing(tmp_path, monkeypatch):
    conversions = []
    real = cv2.cvtColor
    monkeypatch.setattr(cv2, "cvtColor", lambda src, code, *a, **k: (conversions.append(code), real(src, code, *a, **k))[1])
    # 64x48 I420 is 4608 bytes; 17 frames (1 s + 0.5 s look-back at 10 fps, + 2) fit only at every second frame
    rec = ClipRecorder(pre_roll_s=1.0, post_roll_s=0.5, fps=10.0, out_dir=tmp_path, lookback_s=0.5,
                       pre_roll_mb=12 * 4608 / MIB)
    try:
        for i in range(20):
            rec.push(Frame(_image(i), i, i / 10, "cam"))
        assert rec._ring.stride == 2 and rec.buffered_frames == 9 and rec.buffered_bytes <= 12 * 4608
        assert conversions.count(cv2.COLOR_BGR2YUV_I420) == 10  # the frames the stride skips are not converted
        for i in range(20, 60):
            rec.push(Frame(_image(i), i, i / 10, "cam"))
            if i == 25:  # confirmed at 25, opened at 20: pre-roll from 1.0 s
                final = rec.start("ev", start_t=2.0)
            if i == 35:
                rec.stop("ev", end_t=3.5)
        (clip,) = rec.flush()
    finally:
        rec.close()
    # kept pre-roll frames 10, 12, ..., 24 written twice each, then every frame 26..40 once: 4 s at 10 fps
    assert clip.path == final and clip.frames == 31 and clip.first_t == pytest.approx(1.0)
    cap = cv2.VideoCapture(str(final))
    greys = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        greys.append(float(img[img.shape[0] // 2:, img.shape[1] // 2:].mean()))
    cap.release()
    expected = [(i * 7) % 256 for i in range(10, 26, 2) for _ in range(2)] + [(i * 7) % 256 for i in range(26, 41)]
    assert np.allclose(greys, expected, atol=4)
