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

CLIP's own pixel path (clip-vit-b16 fine stage, `Preprocessing.resize` mentions a centre crop): shorter side
to size, then a centre crop, instead of the whole-frame resize.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from edge_vad.backends.base import TensorSpec, quantize
from edge_vad.bundle.manifest import Preprocessing
from edge_vad.errors import EdgeVadError
from edge_vad.resize import CV2_INTERPOLATIONS, INTERPOLATIONS, resize_square


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


def resize_frame(image_bgr: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 BGR frame -> uint8 [size, size, 3] in the manifest's pixel format."""
    if image_bgr.dtype != np.uint8 or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise EdgeVadError(f"frames must be uint8 BGR [H, W, 3], got {image_bgr.dtype} {image_bgr.shape}")
    size = pre.size
    if crops_centre(pre):
        flag = interpolation_flag(pre.interpolation)
        h, w = image_bgr.shape[:2]
        scale = size / min(h, w)
        resized = cv2.resize(image_bgr, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=flag)
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


def lookup_table(pre: Preprocessing, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """[3, 256] table: uint8 pixel value of channel c -> quantised input value (DESIGN.md trap 2)."""
    pixels = np.arange(256, dtype=np.uint8)[:, None].repeat(3, axis=1)  # [256, 3]
    return np.ascontiguousarray(quantize(normalise(pixels, pre), scale, zero_point, dtype).T)


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
    """Frame -> one model's image feed. `raw` tells backend.infer whether the feed is already quantised."""

    pre: Preprocessing
    spec: TensorSpec
    layout: str = ""

    def __post_init__(self) -> None:
        self.layout = input_layout(self.spec, self.layout)
        spatial = self.spec.shape[2:4] if self.layout == "NCHW" else self.spec.shape[1:3]
        if any(d is not None and d != self.pre.size for d in spatial):
            raise EdgeVadError(f"model input '{self.spec.name}' is {self.spec.shape} but the manifest preprocesses to "
                               f"{self.pre.size}x{self.pre.size}; re-export the bundle")
        self.raw = self.spec.quantized
        self._lut: Optional[np.ndarray] = None
        if self.raw:
            self._lut = lookup_table(self.pre, float(self.spec.scale), int(self.spec.zero_point), self.spec.dtype)

    @property
    def mode(self) -> str:
        return f"{self.spec.dtype} lookup table (scale {self.spec.scale:.6g}, zero point {self.spec.zero_point})" \
            if self.raw else "float32 mean/std"

    def __call__(self, image_bgr: np.ndarray) -> Dict[str, np.ndarray]:
        pixels = resize_frame(image_bgr, self.pre)
        if self._lut is not None:
            x = np.empty(pixels.shape, dtype=self._lut.dtype)
            for c in range(3):
                x[..., c] = self._lut[c][pixels[..., c]]
        else:
            x = normalise(pixels, self.pre)
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return {self.spec.name: np.ascontiguousarray(x[None])}
