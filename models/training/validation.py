"""Validation figures for the shipped default models (issue 3's report), computed the same way
for the teacher, the student and the baseline."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from edge_vad.constants import MIL_TOPK_DIVISOR

BASELINE_FRAMES = 8  # the baseline: 8 evenly spaced frames per clip


def clip_score(frame_probs: np.ndarray) -> float:
    """Video score = mean of the top-k frame probabilities (the MIL pooling used in training)."""
    k = max(1, len(frame_probs) // MIL_TOPK_DIVISOR)
    return float(np.sort(frame_probs)[-k:].mean())


def safe_auc(labels: np.ndarray, scores: np.ndarray):
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None


def clip_auc(score_fn: Callable[[object], np.ndarray], clips: Sequence) -> float:
    labels = np.array([c.label for c in clips])
    return safe_auc(labels, np.array([clip_score(score_fn(c)) for c in clips]))


def frame_auc(score_fn: Callable[[object], np.ndarray], videos: Sequence) -> float:
    """Frame AUC pooled over videos that carry frame labels."""
    scores = np.concatenate([score_fn(v) for v in videos])
    labels = np.concatenate([v.frame_labels for v in videos])
    return safe_auc(labels, scores)


def baseline_features(frame_features: np.ndarray) -> np.ndarray:
    """Mean and mean absolute frame-to-frame difference of 8 evenly spaced frame features."""
    idx = np.linspace(0, len(frame_features) - 1, BASELINE_FRAMES).round().astype(int)
    f = frame_features[idx]
    return np.concatenate([f.mean(axis=0), np.abs(np.diff(f, axis=0)).mean(axis=0)])


def _baseline_model():
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))


def baseline_cv_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, seed: int = 0) -> float:
    """5-fold cross-validated clip AUC of the logistic-regression baseline (grouped by source
    video when `groups` is given, so no scene is in both train and test folds)."""
    cv = GroupKFold(n_splits=5) if groups is not None else StratifiedKFold(5, shuffle=True, random_state=seed)
    probs = cross_val_predict(_baseline_model(), x, y, cv=cv, groups=groups, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, probs))


def baseline_split_auc(x_train, y_train, x_val, y_val) -> float:
    model = _baseline_model().fit(x_train, y_train)
    return float(roc_auc_score(y_val, model.predict_proba(x_val)[:, 1]))
