"""Preprocessing at the floor: the table-lookup float path equals the arithmetic one bit for bit, and in the steady
state the preprocess + backbone-feed path allocates no array (tracemalloc counts over many frames), with the
real backbones of the shipped bundle (onnxruntime fp32 NCHW, TFLite int8 NHWC)."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from edge_vad.backends import get_backend
from edge_vad.backends.base import TensorSpec
from edge_vad.bundle import Preprocessing, verify_bundle
from edge_vad.constants import EXACT_AREA, LITE0_MEAN, LITE0_STD
from edge_vad.runtime.preprocess import Preprocessor, normalise, resize_frame
from edge_vad_test_support.bundles import shipped_bundle

PRE = Preprocessing(size=224, mean=list(LITE0_MEAN), std=list(LITE0_STD), resize="whole frame", interpolation=EXACT_AREA,
                    pixel_format="RGB")
FRAMES = 200  # steady-state frames counted
SIZES = ((360, 640), (720, 1280), (200, 200))  # an integer-factor step for the first two; none for the last


def _frames(h: int, w: int, n: int = 4):
    rng = np.random.default_rng(h * w)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("h,w", SIZES)
def test_the_float_table_is_the_arithmetic_bit_for_bit(layout, h, w):
    shape = (1, 3, 224, 224) if layout == "NCHW" else (1, 224, 224, 3)
    pre = Preprocessor(PRE, TensorSpec("image", shape, "float32"))
    for frame in _frames(h, w, 2):
        expected = normalise(resize_frame(frame, PRE), PRE)  # float32 (x - mean) / std per pixel, RGB, HWC
        fed = pre(frame)["image"]
        assert fed.dtype == np.float32 and fed.shape == shape and fed.flags.c_contiguous
        np.testing.assert_array_equal(fed[0], expected.transpose(2, 0, 1) if layout == "NCHW" else expected)


def test_the_feed_is_a_kept_buffer_per_thread():
    pre = Preprocessor(PRE, TensorSpec("image", (1, 3, 224, 224), "float32"))
    a, b = _frames(360, 640, 2)
    first = pre(a)["image"]
    expected_b = pre(b)["image"].copy()
    assert pre(b)["image"] is first  # the same buffer, refilled
    other = {}
    thread = threading.Thread(target=lambda: other.update(pre(b)))
    thread.start()
    thread.join()
    assert other["image"] is not first and not np.shares_memory(other["image"], first)
    np.testing.assert_array_equal(other["image"], expected_b)


def _steady_state_growth(step, frames) -> tuple:
    """(peak, final) bytes traced above the start while `step` runs over FRAMES frames, after a warm-up lap."""
    for f in frames:
        step(f)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(FRAMES):
            step(frames[i % len(frames)])
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base, current - base


@pytest.fixture(scope="module")
def backbones():
    """The shipped bundle's backbones: (manifest preprocessing, {name: loaded backend})."""
    bundle = shipped_bundle()
    if bundle is None:
        pytest.skip("the shipped default bundle is not in this checkout")
    manifest = verify_bundle(bundle).manifest
    loaded = {}
    for name, art in manifest.artifacts.items():
        if art.stage != "coarse_backbone":
            continue
        backend = "tflite" if art.format == "tflite" else "onnxruntime"
        if art.format == "onnx" and art.package_weights is not None:
            from edge_vad.bundle.package_weights import materialise

            path = materialise(bundle / art.file, art.sha256, art.package_weights)
        else:
            path = bundle / art.file
        try:
            loaded[name] = get_backend(backend).load(path)
        except Exception as exc:  # noqa: BLE001 - a missing optional interpreter is a skip for that backend only
            loaded[name] = exc
    yield manifest.preprocessing, loaded
    for b in loaded.values():
        if not isinstance(b, Exception):
            b.close()


@pytest.mark.parametrize("h,w", SIZES[:2])
def test_preprocess_and_backbone_feed_allocate_nothing_per_frame(backbones, h, w):
    pre_m, loaded = backbones
    ran = 0
    for name, backend in loaded.items():
        if isinstance(backend, Exception):
            continue
        pre = Preprocessor(pre_m, backend.inputs[0])

        def step(frame):
            feeds = backend.model_feeds(pre(frame), raw=pre.raw)
            assert np.shares_memory(next(iter(feeds.values())), pre(frame)[pre.spec.name])  # fed as is, no copy

        peak, final = _steady_state_growth(step, _frames(h, w))
        # the smallest buffer of this path is the int8 feed, 224 x 224 x 3 = 150 KB: none was allocated
        assert peak < 4096 and final < 1024, f"{name}: {peak} bytes at peak, {final} kept over {FRAMES} frames"
        ran += 1
    if not ran:
        pytest.skip("no backbone backend of the shipped bundle loads here")
