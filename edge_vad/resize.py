"""Whole-frame resize to the model's square input, the same on every CPU architecture.

`cv2.resize(INTER_AREA)` with a non-integer factor averages in float with SIMD code that rounds differently
on x86 and arm64: one level off in about 0.09 % of pixels of a 640x360 -> 224x224 resize, enough to move
scores by up to 0.076 on the int8 path (DESIGN.md, "Board facts"). So the default interpolation,
"exact-area", is built from two steps that are exact by construction:
1. INTER_AREA by INTEGER factors kx, ky (OpenCV's area-fast path: integer sums, one float multiply and a
   round-to-nearest per pixel, identical on both architectures); the frame is first cropped by at most
   k - 1 pixels so the factors divide it exactly;
2. INTER_LINEAR_EXACT (OpenCV's fixed-point, bit-exact bilinear) for the remaining factor, which is below 2,
   so bilinear sampling still sees every source pixel (no aliasing).
The older cv2 interpolations stay available for bundles that name them.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from edge_vad.constants import EXACT_AREA
EXACT_AREA_TEXT = ("whole frame, integer-factor cv2.INTER_AREA then cv2.INTER_LINEAR_EXACT (bit-identical on x86 "
                   "and arm64), no crop")
CV2_INTERPOLATIONS: Dict[str, int] = {
    "area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST,
}
INTERPOLATIONS = (EXACT_AREA, *CV2_INTERPOLATIONS)


def integer_factors(width: int, height: int, size: int) -> tuple:
    """(kx, ky): the largest integer shrink factors that keep both sides at or above `size`."""
    return max(1, width // size), max(1, height // size)


def intermediate_shape(image_shape: Tuple[int, ...], size: int) -> Optional[Tuple[int, ...]]:
    """Shape of exact-area's integer-factor step for a frame of `image_shape`; None when it has none."""
    h, w = image_shape[:2]
    kx, ky = integer_factors(w, h, size)
    if kx == 1 and ky == 1:
        return None
    return (h // ky, w // kx) + tuple(image_shape[2:])


def exact_area_resize(image: np.ndarray, size: int, dst: Optional[np.ndarray] = None,
                      scratch: Optional[np.ndarray] = None) -> np.ndarray:
    """uint8 [H, W, C] -> [size, size, C], reproducible across CPU architectures (see module doc).
    `dst` receives the result and `scratch` (of intermediate_shape) the integer step, so a caller that keeps
    both allocates nothing per frame."""
    h, w = image.shape[:2]
    kx, ky = integer_factors(w, h, size)
    if kx > 1 or ky > 1:
        cw, ch = w - w % kx, h - h % ky
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        step = scratch if scratch is not None and scratch.shape[:2] == (ch // ky, cw // kx) else None
        image = cv2.resize(image[y0:y0 + ch, x0:x0 + cw], (cw // kx, ch // ky), dst=step, interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (size, size), dst=dst, interpolation=cv2.INTER_LINEAR_EXACT)


def resize_square(image: np.ndarray, size: int, interpolation: str, dst: Optional[np.ndarray] = None,
                  scratch: Optional[np.ndarray] = None) -> np.ndarray:
    """The whole frame to size x size (aspect not kept) with a named interpolation (INTERPOLATIONS)."""
    if interpolation == EXACT_AREA:
        return exact_area_resize(image, size, dst, scratch)
    try:
        flag = CV2_INTERPOLATIONS[interpolation.lower()]
    except KeyError:
        raise ValueError(f"interpolation {interpolation!r} is not one of {list(INTERPOLATIONS)}") from None
    return cv2.resize(image, (size, size), dst=dst, interpolation=flag)
