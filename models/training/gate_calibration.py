"""Gate thresholds that fit a trained coarse head, chosen from its scores on NORMAL training videos.

The runtime gate (edge_vad.runtime.gate) opens when the moving average of the coarse score reaches
on_threshold and closes below off_threshold. Fixed defaults (0.6 / 0.4) do not fit every model: a MIL-trained
head's scores are not calibrated probabilities. Rule: smooth each normal video's scores exactly as the gate
does, pool the frames, and take on = the ON_QUANTILE and off = the OFF_QUANTILE quantile, so about 1 % of
normal frames sit above the opening level. Training videos, not validation ones, so the validation figures
stay untouched by the choice; the head has seen these videos, so its scores there are optimistic (low), and
the thresholds err towards opening more often: the fine stage then decides. The bundle carries the result
(manifest coarse.gate) and the runtime uses it unless the user's config sets thresholds.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edge_vad.errors import EdgeVadError

ON_QUANTILE = 0.99
OFF_QUANTILE = 0.95
THRESHOLD_RANGE = (0.01, 0.99)  # GateConfig needs 0 < threshold < 1


def smoothed(scores: np.ndarray, frames: int) -> np.ndarray:
    """The gate's smoothing: mean of the last `frames` scores (fewer at the very start)."""
    s = np.asarray(scores, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(s)])
    idx = np.arange(1, len(s) + 1)
    lo = np.maximum(0, idx - frames)
    return (c[idx] - c[lo]) / (idx - lo)


def suggest_gate(normal_scores: Sequence[np.ndarray], smoothing_frames: int) -> dict:
    """{on_threshold, off_threshold, rule, n_frames} from per-video scores of normal videos."""
    if not normal_scores or not sum(len(s) for s in normal_scores):
        raise EdgeVadError("gate calibration needs the scores of at least one normal video")
    pooled = np.concatenate([smoothed(s, smoothing_frames) for s in normal_scores])
    on, off = (float(np.clip(np.quantile(pooled, q), *THRESHOLD_RANGE)) for q in (ON_QUANTILE, OFF_QUANTILE))
    return {"on_threshold": round(on, 4), "off_threshold": round(min(off, on), 4),
            "rule": f"quantiles {ON_QUANTILE} (on) and {OFF_QUANTILE} (off) of the {smoothing_frames}-frame moving "
                    f"average of the deployed head's score over {len(pooled)} frames of normal training videos",
            "n_frames": int(len(pooled))}
