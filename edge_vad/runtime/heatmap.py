"""Where a frame's evidence is: the heatmap, its top region as a box in frame pixels, and an overlay that colours
that region only (issue 15: the frame must stay readable; no whole-frame tint).

The heatmap ("fa-motion", bundles since issue 15) follows the evidence AND the motion:

    heat = upsample(evidence, MOTION_GRID) * (motion + MOTION_FLOOR * mean(motion) + tiny)

evidence [h, w]: where the model's evidence is. Without calibration: how much F_A changed at each position since
the previous frame, sum_c |A_c(t) - A_c(t-1)| (the quantity the coarse head's motion inputs are pooled from);
with a camera's calibration: its per-region evidence (edge_vad.runtime.scene_calibration). motion
[MOTION_GRID, MOTION_GRID]: the grey-level change of the model's input frame per cell. The product keeps the
evidence's place and sharpens it to what moves in it; the floor keeps the evidence alone where nothing moves.
(On the Ped2 pixel masks F_A's own 7 x 7 change pointed at the anomaly in 9 % of frames; the product, 78 %.)

    box = top_region(heat, frame.shape[:2])      # {"x", "y", "w", "h", "score", "cells"} or None
    img = draw_top_region(frame, heat)          # colour + outline on the top region, the rest untouched

The top region is the 4-connected group of cells around the hottest cell whose heat is at least TOP_FRACTION
of that cell's (above the map's median, so a flat map has no region). Cells map to the frame by its own size
(the model's whole-frame resize keeps no aspect ratio, so a cell is frame_w / w by frame_h / h pixels).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import cv2
import numpy as np

MOTION_GRID = 28  # cells per side of the grey-level motion (8 x 8 pixels of the 224 x 224 input)
MOTION_FLOOR = 0.5  # share of the mean motion added everywhere: evidence alone still counts where nothing moves
TOP_FRACTION = 0.6  # cells at least this share of the peak (above the median) join the top region
TINT_ALPHA = 0.45  # colour weight inside the top region
OUTLINE_BGR = (0, 0, 255)  # red box around the top region
TINT_BGR = (0, 0, 255)


def grey_input(image_bgr: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    """The frame as the model sees it (size x size, the manifest's resize), in grey levels (uint8)."""
    from edge_vad.resize import resize_square

    return cv2.cvtColor(resize_square(image_bgr, size, interpolation), cv2.COLOR_BGR2GRAY)


def grey_motion(grey: np.ndarray, previous: Optional[np.ndarray], grid: int = MOTION_GRID) -> np.ndarray:
    """[grid, grid] mean |grey(t) - grey(t-1)| per cell (zeros without a previous frame)."""
    if previous is None:
        return np.zeros((grid, grid), np.float32)
    d = np.abs(np.asarray(grey, np.float32) - np.asarray(previous, np.float32))
    return cv2.resize(d, (grid, grid), interpolation=cv2.INTER_AREA)


def map_change(fa_map: np.ndarray, previous: Optional[np.ndarray]) -> np.ndarray:
    """[h, w] sum over channels of |A(t) - A(t-1)| (zeros without a previous map)."""
    a = np.asarray(fa_map, np.float32)
    if previous is None:
        return np.zeros(a.shape[1:], np.float32)
    return np.abs(a - np.asarray(previous, np.float32)).sum(axis=0)


def evidence_heatmap(evidence: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """The "fa-motion" heatmap (module doc): [MOTION_GRID, MOTION_GRID]."""
    g = motion.shape[0]
    e = cv2.resize(np.maximum(np.asarray(evidence, np.float32), 0.0), (g, g), interpolation=cv2.INTER_LINEAR)
    m = np.asarray(motion, np.float32)
    return e * (m + MOTION_FLOOR * float(m.mean()) + 1e-6)


def _finite(heat: np.ndarray) -> np.ndarray:
    h = np.asarray(heat, dtype=np.float32)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be 2-D [h, w], got shape {h.shape}")
    return np.where(np.isfinite(h), h, -np.inf)


def top_cells(heat: np.ndarray, fraction: float = TOP_FRACTION) -> Optional[np.ndarray]:
    """Boolean [h, w] mask of the top region (module doc), or None when the map has no peak."""
    h = _finite(heat)
    finite = h[np.isfinite(h)]
    if finite.size == 0:
        return None
    base = float(np.median(finite))
    peak_index = np.unravel_index(int(np.argmax(h)), h.shape)
    peak = float(h[peak_index])
    if not peak > base:
        return None
    hot = (h >= base + fraction * (peak - base)).astype(np.uint8)
    _, labels = cv2.connectedComponents(hot, connectivity=4)
    return labels == labels[peak_index]


def cell_box(mask: np.ndarray, frame_hw: Tuple[int, int]) -> Dict[str, int]:
    """The frame-pixel box (x, y, w, h) covering the cells set in `mask` [h, w]."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    fh, fw = frame_hw
    gh, gw = mask.shape
    x0, x1 = int(round(cols[0] * fw / gw)), int(round((cols[-1] + 1) * fw / gw))
    y0, y1 = int(round(rows[0] * fh / gh)), int(round((rows[-1] + 1) * fh / gh))
    return {"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0}


def top_region(heat: np.ndarray, frame_hw: Tuple[int, int]) -> Optional[Dict[str, object]]:
    """{"x", "y", "w", "h"} in frame pixels, "score" (the peak heat) and "cells" of the top region; None if flat."""
    mask = top_cells(heat)
    if mask is None:
        return None
    h = _finite(heat)
    return {**cell_box(mask, frame_hw), "score": float(h.max()), "cells": int(mask.sum())}


def draw_top_region(frame: np.ndarray, heat: np.ndarray, alpha: float = TINT_ALPHA) -> np.ndarray:
    """A copy of `frame` with the top region's cells tinted (bilinearly feathered at their edges) and its box
    outlined; everything else keeps its pixels. A flat heatmap returns the frame unchanged."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 BGR [H, W, 3], got {frame.dtype} {frame.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = frame.copy()
    mask = top_cells(heat)
    if mask is None:
        return out
    height, width = frame.shape[:2]
    weight = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)[..., None] * alpha
    tint = np.empty_like(out)
    tint[:] = TINT_BGR
    out = np.clip(out * (1.0 - weight) + tint * weight, 0, 255).astype(np.uint8)
    box = cell_box(mask, (height, width))
    thickness = max(1, round(min(height, width) / 180))
    cv2.rectangle(out, (box["x"], box["y"]), (box["x"] + box["w"] - 1, box["y"] + box["h"] - 1), OUTLINE_BGR, thickness)
    return out
