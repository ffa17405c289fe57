"""Camera frame -> model input, exactly as the bundle's manifest says (DESIGN.md "Data flow on the device").

    pre = Preprocessor(manifest.preprocessing, backend.inputs[0], layout="NCHW")
    feed = pre(frame.image)          # {"image": array} ready for backend.infer(feed, raw=pre.raw)

Float inputs (ONNX, TensorRT, float TFLite): resize the WHOLE frame to size x size with the named
interpolation (no crop, aspect not kept; "exact-area", edge_vad.resize, is the same on x86 and arm64), reorder BGR -> RGB when the manifest says RGB, then per channel
(x - mean * scale) / (std * scale) in float32, which is (x / scale - mean) / std written the way the exporter
(edge_vad_models.backbones.preprocess_bgr) computes it, so both round the same; NCHW or NHWC as the input is.

Quantised inputs (full-int8 TFLite, DESIGN.md toolchain trap 2): the input scale / zero point come from
calibration, so they are read from the model and folded, with mean / std, into a 256-entry lookup table per
channel: q = clip(round(((p - mean * scale) / (std * scale)) / s) + zp). A resized uint8 frame then maps to
the int8 (or uint8) input by table lookup, no float image at all, and the result equals quantising the float
path element for element (tests/runtime/test_pipeline.py checks it). Feed it with `raw=True`.

Both paths are one table lookup: a uint8 pixel has 256 values, so the float path's per-channel arithmetic
is also a [3, 256] float32 table, filled by the same float32 operations (bit-identical to computing it per
pixel). Per frame, `Preprocessor` then does: resize into a kept buffer (cv2.resize dst=, exact-area's
integer step into a kept scratch), BGR -> RGB into a kept buffer (cv2.cvtColor dst=), the table lookup
(cv2.LUT dst=; for NCHW into a kept HWC buffer, then one np.copyto through a transposed view into the feed).
No array is allocated per frame (tests/runtime/test_preprocess.py counts with tracemalloc). The buffers are
per thread (pipelines share one CoarseStage), and the returned feed IS the thread's buffer: it is valid until
that thread's next call; keep a copy to hold on to it.

CLIP's own pixel path (clip-vit-b16 fine stage, `Preprocessing.resize` mentions a centre crop): shorter side
to size, then a centre crop, instead of the whole-frame resize.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from edge_vad.backends.base import TensorSpec, quantize
from edge_vad.bundle.manifest import Preprocessing
from edge_vad.errors import EdgeVadError
from edge_vad.resize import CV2_INTERPOLATIONS, INTERPOLATIONS, intermediate_shape, resize_square


def _unknown_interpolation(name: str) -> EdgeVadError:
    return EdgeVadError(f"manifest preprocessing.interpolation {name!r} is not one of {list(INTERPOLATIONS)}; "
                        "re-export the bundle, or update edge-vad")


def interpolation_flag(name: str) -> int:
    """The cv2 flag of a plain cv2 interpolation name (the centre-crop path takes only these)."""
    try:
        return CV2_INTERPOLATIONS[name.lower()]
    except KeyError:
        raise _unknown_interpolation(name) from None


def crops_centre(pre: Preprocessing) -> bool:
    """True for CLIP-style 'shorter side to size, centre crop'; False for the whole-frame resize."""
    text = pre.resize.lower()
    return "crop" in text and "no crop" not in text


def _check_frame(image_bgr: np.ndarray) -> None:
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise EdgeVadError(f"frames must be uint8 BGR [H, W, 3], got {image_bgr.dtype} {image_bgr.shape}")


def _cover_size(shape: Tuple[int, ...], size: int) -> Tuple[int, int]:
    """(w, h) of the centre-crop path's resize: shorter side to `size`."""
    h, w = shape[:2]
    scale = size / min(h, w)
    return max(size, round(w * scale)), max(size, round(h * scale))


def resize_frame(image_bgr: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 BGR frame -> uint8 [size, size, 3] in the manifest's pixel format (allocates; Preprocessor does not)."""
    _check_frame(image_bgr)
    size = pre.size
    if crops_centre(pre):
        resized = cv2.resize(image_bgr, _cover_size(image_bgr.shape, size), interpolation=interpolation_flag(pre.interpolation))
        top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
        resized = resized[top:top + size, left:left + size]
    else:
        if pre.interpolation not in INTERPOLATIONS:
            raise _unknown_interpolation(pre.interpolation)
        resized = resize_square(image_bgr, size, pre.interpolation)
    return resized[..., ::-1] if pre.pixel_format == "RGB" else resized


def _channel_constants(pre: Preprocessing) -> Tuple[np.ndarray, np.ndarray]:
    if len(pre.mean) != 3 or len(pre.std) != 3 or min(pre.std) <= 0:
        raise EdgeVadError(f"manifest preprocessing needs 3 means and 3 positive stds, got mean {pre.mean} std {pre.std}")
    # Same float32 arithmetic as the exporter: constants scaled to pixel units once.
    return (np.asarray(pre.mean, dtype=np.float32) * pre.scale, np.asarray(pre.std, dtype=np.float32) * pre.scale)


def normalise(rgb_uint8: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 [..., 3] -> float32 (x - mean * scale) / (std * scale), channels last."""
    mean, std = _channel_constants(pre)
    return (rgb_uint8.astype(np.float32) - mean) / std


def _all_pixels() -> np.ndarray:
    return np.arange(256, dtype=np.uint8)[:, None].repeat(3, axis=1)  # [256, 3]: every value in every channel


def lookup_table(pre: Preprocessing, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """[3, 256] table: uint8 pixel value of channel c -> quantised input value (DESIGN.md trap 2)."""
    return np.ascontiguousarray(quantize(normalise(_all_pixels(), pre), scale, zero_point, dtype).T)


def float_table(pre: Preprocessing) -> np.ndarray:
    """[3, 256] float32 table: uint8 pixel value of channel c -> normalised input, by normalise() itself."""
    return np.ascontiguousarray(normalise(_all_pixels(), pre).T)


def input_layout(spec: TensorSpec, declared: str = "") -> str:
    """NCHW or NHWC of a 4-D image input: the manifest's word when it gives one, else the shape's."""
    if declared in ("NCHW", "NHWC"):
        return declared
    shape = spec.shape
    if len(shape) == 4 and shape[1] == 3 and shape[3] != 3:
        return "NCHW"
    if len(shape) == 4 and shape[3] == 3:
        return "NHWC"
    raise EdgeVadError(f"input '{spec.name}' has shape {spec.shape}; expected a [1, 3, S, S] or [1, S, S, 3] image")


@dataclass
class Preprocessor:
    """Frame -> one model's image feed. `raw` tells backend.infer whether the feed is already quantised.
    The feed returned is this thread's buffer, valid until the thread's next call (module doc)."""

    pre: Preprocessing
    spec: TensorSpec
    layout: str = ""

    def __post_init__(self) -> None:
        self.layout = input_layout(self.spec, self.layout)
        spatial = self.spec.shape[2:4] if self.layout == "NCHW" else self.spec.shape[1:3]
        if any(d is not None and d != self.pre.size for d in spatial):
            raise EdgeVadError(f"model input '{self.spec.name}' is {self.spec.shape} but the manifest preprocesses to "
                               f"{self.pre.size}x{self.pre.size}; re-export the bundle")
        if not crops_centre(self.pre) and self.pre.interpolation not in INTERPOLATIONS:
            raise _unknown_interpolation(self.pre.interpolation)
        self.raw = self.spec.quantized
        self._lut: np.ndarray = (lookup_table(self.pre, float(self.spec.scale), int(self.spec.zero_point), self.spec.dtype)
                                 if self.raw else float_table(self.pre))
        self._lut_cv = np.ascontiguousarray(self._lut.T.reshape(256, 1, 3))  # cv2.LUT: channel c -> table c
        self._local = threading.local()

    @property
    def mode(self) -> str:
        return f"{self.spec.dtype} lookup table (scale {self.spec.scale:.6g}, zero point {self.spec.zero_point})" \
            if self.raw else "float32 mean/std"

    def _buffers(self) -> Any:
        b = self._local
        if not hasattr(b, "feed"):
            size, dtype = self.pre.size, self._lut.dtype
            b.resized = np.empty((size, size, 3), np.uint8)
            b.rgb = np.empty((size, size, 3), np.uint8)
            b.hwc = np.empty((size, size, 3), dtype)  # NCHW: the lookup's result before the transpose
            b.feed = np.empty((1, 3, size, size) if self.layout == "NCHW" else (1, size, size, 3), dtype)
            b.scratch = {}  # input shape -> the resize's intermediate buffer
        return b

    def _scratch(self, b: Any, shape: Tuple[int, ...]) -> Optional[np.ndarray]:
        if shape not in b.scratch:
            if crops_centre(self.pre):
                w, h = _cover_size(shape, self.pre.size)
                b.scratch[shape] = np.empty((h, w, 3), np.uint8)
            else:
                inter = intermediate_shape(shape, self.pre.size)
                b.scratch[shape] = None if inter is None else np.empty(inter, np.uint8)
        return b.scratch[shape]

    def _resize(self, image_bgr: np.ndarray, b: Any) -> np.ndarray:
        """The frame as uint8 BGR [size, size, 3] in b.resized."""
        _check_frame(image_bgr)
        size = self.pre.size
        scratch = self._scratch(b, image_bgr.shape)
        if crops_centre(self.pre):
            cover = cv2.resize(image_bgr, (scratch.shape[1], scratch.shape[0]), dst=scratch,  # type: ignore[union-attr]
                               interpolation=interpolation_flag(self.pre.interpolation))
            top, left = (cover.shape[0] - size) // 2, (cover.shape[1] - size) // 2
            np.copyto(b.resized, cover[top:top + size, left:left + size])
            return b.resized
        return resize_square(image_bgr, size, self.pre.interpolation, dst=b.resized, scratch=scratch)

    def last_grey(self) -> Optional[np.ndarray]:
        """Grey levels (uint8, new array) of the frame this thread resized last: the model's own pixels, so the
        heatmap's motion costs one colour conversion instead of a second resize (equal to
        edge_vad.runtime.heatmap.grey_input of that frame). None for the centre-crop path (not the model's frame)."""
        if crops_centre(self.pre) or not hasattr(self._local, "resized"):
            return None
        return cv2.cvtColor(self._local.resized, cv2.COLOR_BGR2GRAY)

    def __call__(self, image_bgr: np.ndarray) -> Dict[str, np.ndarray]:
        b = self._buffers()
        pixels = self._resize(image_bgr, b)
        if self.pre.pixel_format == "RGB":
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB, dst=b.rgb)
        if self.layout == "NHWC":
            cv2.LUT(pixels, self._lut_cv, dst=b.feed[0])
        else:
            cv2.LUT(pixels, self._lut_cv, dst=b.hwc)
            np.copyto(b.feed[0], b.hwc.transpose(2, 0, 1))
        return {self.spec.name: b.feed}
