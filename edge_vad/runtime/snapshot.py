"""Heatmap snapshots: where the coarse stage's evidence is, drawn over the frame, as a JPEG.

    img = overlay(frame.image, heat)                  # pure: BGR uint8 in, BGR uint8 out
    path = write_snapshot(out_dir / f"{event_id}.jpg", frame.image, heat)   # atomic

The overlay colours the heatmap's TOP REGION only and outlines its box (edge_vad.runtime.heatmap); the rest of
the frame keeps its pixels, so the picture stays readable (issue 15: a whole-frame colour map tinted the frame
blue). It shows WHERE the evidence is, not how strong it is (the event's score says that).
`normalise` maps a heatmap to 0..1 for tools that want the whole map (explain's figures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np

from edge_vad import fileio
from edge_vad.fileio import fsync_dir  # noqa: F401 (re-exported: it lived here before edge_vad.fileio)
from edge_vad.runtime.heatmap import TINT_ALPHA, draw_top_region

DEFAULT_ALPHA = TINT_ALPHA  # colour weight inside the top region
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


def overlay(frame: np.ndarray, heat: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """The frame with the heatmap's top region tinted and outlined (edge_vad.runtime.heatmap.draw_top_region)."""
    return draw_top_region(frame, heat, alpha)


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
                   quality: int = DEFAULT_JPEG_QUALITY) -> Path:
    """Overlay `heat` on `frame` and write it atomically as a JPEG; returns the path."""
    return atomic_write_bytes(path, encode_jpeg(overlay(frame, heat, alpha), quality))
