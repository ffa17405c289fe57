"""The default resize ("exact-area", edge_vad.resize) is integer arithmetic plus OpenCV's bit-exact bilinear, so
the model sees the same pixels on x86 and arm64; the emulated-arm64 check (scripts/) compares whole runs."""

from __future__ import annotations

import numpy as np
import pytest

from edge_vad.bundle import Preprocessing
from edge_vad.constants import LITE0_MEAN, LITE0_STD
from edge_vad.errors import EdgeVadError
from edge_vad.resize import EXACT_AREA, exact_area_resize, integer_factors, resize_square
from edge_vad.runtime.preprocess import resize_frame

RNG = np.random.default_rng(7)


def _block_mean(img: np.ndarray, ky: int, kx: int) -> np.ndarray:
    """Exact integer block mean: OpenCV's area-fast path rounds 2x2 blocks half up ((s + 2) >> 2, its integer
    SIMD path) and every other factor half to even (one float multiply, then cvRound)."""
    h, w, c = img.shape
    sums = img.reshape(h // ky, ky, w // kx, kx, c).astype(np.int64).sum(axis=(1, 3))
    if (ky, kx) == (2, 2):
        return ((sums + 2) >> 2).astype(np.uint8)
    return np.rint(sums / (kx * ky)).astype(np.uint8)


@pytest.mark.parametrize("h,w", [(448, 448), (448, 672), (224, 448), (672, 1120)])
def test_integer_factor_step_is_an_exact_block_mean(h: int, w: int) -> None:
    img = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    ky, kx = h // 224, w // 224
    np.testing.assert_array_equal(exact_area_resize(img, 224), _block_mean(img, ky, kx))


def test_factors_keep_both_sides_at_least_the_target() -> None:
    assert integer_factors(640, 360, 224) == (2, 1)
    assert integer_factors(1920, 1080, 224) == (8, 4)
    assert integer_factors(100, 80, 224) == (1, 1)  # small frames are only scaled up (bilinear)


@pytest.mark.parametrize("h,w", [(360, 640), (1080, 1920), (241, 367), (90, 160), (224, 224)])
def test_any_frame_becomes_the_square_input(h: int, w: int) -> None:
    img = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = exact_area_resize(img, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    dst = np.empty((224, 224, 3), np.uint8)
    assert resize_square(img, 224, EXACT_AREA, dst=dst) is dst
    np.testing.assert_array_equal(dst, out)


def test_a_flat_frame_stays_flat() -> None:
    img = np.full((720, 1280, 3), 77, np.uint8)
    assert (exact_area_resize(img, 224) == 77).all()


def test_the_runtime_uses_the_manifest_interpolation_and_names_unknown_ones() -> None:
    pre = Preprocessing(size=224, mean=list(LITE0_MEAN), std=list(LITE0_STD), resize="whole frame", interpolation=EXACT_AREA)
    img = RNG.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_frame(img, pre), exact_area_resize(img, 224)[..., ::-1])
    bad = pre.model_copy(update={"interpolation": "lanczos9"})
    with pytest.raises(EdgeVadError, match="lanczos9.*not one of.*exact-area"):
        resize_frame(img, bad)
