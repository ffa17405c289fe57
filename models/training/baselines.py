"""The issue's trivial baselines, fitted and scored in the same folds as the designs (issue 15).

(a) frozen Lite0 features of 8 evenly spaced frames of a clip: the mean and the mean absolute frame-to-frame
    difference of the pooled trunk feature, standardised, logistic regression (C = 0.1), fitted on the
    training fold's fight-surv clips. A clip is scored directly; a stream or a Ped2 video frame by frame, on
    the last STREAM_SPAN frames (8 evenly spaced of them), since the clips it learnt from are about that long.
(b) the mean absolute difference of consecutive greyscale frames, z-scored per video (whole-video statistics).
(c) the same difference, raw.
"""

from __future__ import annotations

import numpy as np

from edge_vad_models.training.cv_eval import Video
from edge_vad_models.training.validation import BASELINE_FRAMES, _baseline_model, baseline_features
from edge_vad_models.training.window_stats import padded_windows

BASELINES = ("baseline_a", "baseline_b", "baseline_c")  # their keys in a cross-validation summary
STREAM_SPAN = 48  # frames a streaming baseline (a) looks back: the median clip is 60 frames, most are 50-60


def fit_baseline_a(train: list[Video]):
    """Baseline (a) on the training fold's fight-surv clips -> (clip scorer, per-frame scorer)."""
    fights = [v for v in train if not v.name.startswith("ped2_")]
    x = np.stack([baseline_features(np.asarray(v.parts["pooled"])) for v in fights])
    model = _baseline_model().fit(x, [v.clip.label for v in fights])

    def clip(v: Video) -> float:
        return float(model.predict_proba(baseline_features(np.asarray(v.parts["pooled"]))[None])[0, 1])

    def frames(v: Video) -> np.ndarray:
        views = padded_windows(np.asarray(v.parts["pooled"]), STREAM_SPAN)
        idx = np.linspace(0, STREAM_SPAN - 1, BASELINE_FRAMES).round().astype(int)
        f = views[:, idx]
        feats = np.concatenate([f.mean(axis=1), np.abs(np.diff(f, axis=1)).mean(axis=1)], axis=1)
        return model.predict_proba(feats)[:, 1]

    return clip, frames


def baseline_b(v: Video) -> np.ndarray:
    d = np.asarray(v.parts["pixdiff"], dtype=np.float64)
    return (d - d.mean()) / (d.std() + 1e-9)


def baseline_c(v: Video) -> np.ndarray:
    return np.asarray(v.parts["pixdiff"], dtype=np.float64)


def best_baseline(summary: dict, metric: str) -> tuple:
    """(key, fold-mean) of the best baseline on `metric` in a cross-validation summary (default_cv.run_cv);
    a baseline with no folds for the metric ranks last."""
    key = max(BASELINES, key=lambda k: summary[k][metric]["mean"] if summary[k][metric].get("folds") else -1)
    return key, summary[key][metric]["mean"]
