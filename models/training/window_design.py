"""Coarse designs over window statistics, fitted on cached per-frame vectors (cheap enough to cross-validate).

A WindowDesign names which per-frame vectors go in (models/training/frame_cache.DERIVED parts), which window
statistics of each (models/training/window_stats.py), the window W and the readout: a standardised, L2-
regularised logistic regression (what the issue's pointer suggests), fitted on windows that end every
`train_stride` frames, labelled by their last frame (fight-surv clips are fight from first to last frame; Ped2
test videos have frame labels; Ped2 training videos are normal). Every video weighs the same in the loss
(weights 1 / its windows), and the Ped2 videos together weigh `ped2_share` of the fight-surv clips together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from edge_vad_models.training.cv_eval import Video
from edge_vad_models.training.window_stats import STATS, stream_stats


@dataclass(frozen=True)
class WindowDesign:
    inputs: tuple = (("pooled", STATS),)  # ((part, stats), ...)
    window: int = 16
    C: float = 0.01
    train_stride: int = 4
    ped2_share: float = 0.5
    name: str = ""

    def features(self, v: Video) -> np.ndarray:
        """[T, F] per-frame design features of one stream (causal)."""
        return np.concatenate([stream_stats(np.asarray(v.parts[part]).reshape(v.frames, -1), self.window, stats)
                               for part, stats in self.inputs], axis=1)


def training_set(design: WindowDesign, videos: Sequence[Video], feats: Optional[dict] = None):
    """(x, y, sample weights) of the windows a design is fitted on."""
    xs, ys, ws = [], [], []
    fight_total = sum(1 for v in videos if not v.name.startswith("ped2_"))
    ped2_total = len(videos) - fight_total
    for v in videos:
        f = feats[v.name] if feats is not None else design.features(v)
        idx = np.arange(min(design.window // 2, v.frames - 1), v.frames, design.train_stride)
        xs.append(f[idx])
        ys.append(v.labels[idx])
        share = design.ped2_share * fight_total / max(ped2_total, 1) if v.name.startswith("ped2_") else 1.0
        ws.append(np.full(len(idx), share / len(idx)))
    w = np.concatenate(ws)
    return np.concatenate(xs), np.concatenate(ys), w * len(w) / w.sum()


@dataclass
class FittedWindowHead:
    design: WindowDesign
    scaler: StandardScaler
    model: LogisticRegression
    feats: Optional[dict] = field(default=None, repr=False)
    platt: tuple = (1.0, 0.0)  # (a, b): logits a * z + b (Platt scaling, `calibrate_logits`)

    def logits(self, v: Video) -> np.ndarray:
        f = self.feats[v.name] if (self.feats is not None and v.name in self.feats) else self.design.features(v)
        a, b = self.platt
        return a * self.model.decision_function(self.scaler.transform(f)) + b

    def export_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(center, scale, coef, intercept) with the Platt scaling folded in, for WindowStatsHead.load_fitted."""
        a, b = self.platt
        return (self.scaler.mean_, self.scaler.scale_, a * self.model.coef_[0], float(a * self.model.intercept_[0] + b))

    def __call__(self, v: Video) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(v)))


def fit_window_head(design: WindowDesign, videos: Sequence[Video], feats: Optional[dict] = None) -> FittedWindowHead:
    x, y, w = training_set(design, videos, feats)
    scaler = StandardScaler().fit(x, sample_weight=w)
    model = LogisticRegression(C=design.C, max_iter=3000, tol=1e-5).fit(scaler.transform(x), y, sample_weight=w)
    return FittedWindowHead(design, scaler, model, feats)


def platt_scaling(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(a, b) so that sigmoid(a * z + b) matches held-out labels (1-D logistic regression on out-of-fold logits).
    Ranking is unchanged; what changes is that the score is a probability with room between 0.99 and 1, so the
    gate's thresholds (0 < t < 1) can separate normal excursions from anomalies."""
    model = LogisticRegression(C=1e4, max_iter=1000).fit(np.asarray(logits, np.float64).reshape(-1, 1), labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])
