"""Heatmap snapshots: the coarse stage's class-activation map blended over the frame, as a JPEG.

    img = overlay(frame.image, heat)                  # pure: BGR uint8 in, BGR uint8 out
    path = write_snapshot(out_dir / f"{event_id}.jpg", frame.image, heat)   # atomic

Normalisation is per snapshot (min..max of the heatmap -> 0..1) unless `value_range` fixes it:
the overlay shows WHERE the evidence is, not how strong it is (the event's score says that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np

from edge_vad import fileio
from edge_vad.fileio import fsync_dir  # noqa: F401 (re-exported: it lived here before edge_vad.fileio)

DEFAULT_ALPHA = 0.45  # heatmap weight in the blend: frame stays readable under the colours
DEFAULT_JPEG_QUALITY = 90


def normalise(heat: np.ndarray, value_range: Optional[Tuple[float, float]] = None) -> np.ndarray:
    """float heatmap -> float32 in [0, 1]; NaN/inf count as the minimum; a flat map gives zeros."""
    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be 2-D [h, w], got shape {h.shape}")
    finite = np.isfinite(h)
    if value_range is None:
        if not finite.any():
            return np.zeros_like(h)
        lo, hi = float(h[finite].min()), float(h[finite].max())
    else:
        lo, hi = map(float, value_range)
    h = np.where(finite, h, lo)
    if hi <= lo:
        return np.zeros_like(h)
    return np.clip((h - lo) / (hi - lo), 0.0, 1.0)


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = DEFAULT_ALPHA,
            value_range: Optional[Tuple[float, float]] = None, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """Upsample `heat` to the frame, normalise, colour it (JET: blue low, red high) and blend:
    out = (1 - alpha) * frame + alpha * colour. Returns a new uint8 BGR image."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 BGR [H, W, 3], got {frame.dtype} {frame.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = frame.shape[:2]
    unit = normalise(heat, value_range)
    # Bilinear upsampling of the low-res map: CAM-style heatmaps are shown smooth, not blocky.
    unit = cv2.resize(unit, (width, height), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.round(unit * 255).astype(np.uint8), colormap)
    return cv2.addWeighted(frame, 1.0 - alpha, colour, alpha, 0.0)


def atomic_write_bytes(path: Union[str, Path], data: bytes, fsync: bool = True,
                       mode: Optional[int] = fileio.SHARED_FILE_MODE) -> Path:
    """edge_vad.fileio.atomic_write_bytes, 0o644 whatever the umask unless `mode` says otherwise, as
    this module's writer always was: snapshots and run reports are meant to be read by other tools.
    (edge_vad.runtime.report imports it from here.)"""
    return fileio.atomic_write_bytes(path, data, fsync=fsync, mode=mode)


def encode_jpeg(image: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"could not JPEG-encode an image of shape {image.shape}")
    return buf.tobytes()


def write_snapshot(path: Union[str, Path], frame: np.ndarray, heat: np.ndarray, alpha: float = DEFAULT_ALPHA,
                   value_range: Optional[Tuple[float, float]] = None, quality: int = DEFAULT_JPEG_QUALITY) -> Path:
    """Overlay `heat` on `frame` and write it atomically as a JPEG; returns the path."""
    return atomic_write_bytes(path, encode_jpeg(overlay(frame, heat, alpha, value_range), quality))
