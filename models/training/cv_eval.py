"""Cross-validated figures of a coarse design and of the issue's baselines, in the same folds (issue 15).

A design is anything with `fit(train videos) -> scorer`, where `scorer(video data of one stream) -> per-frame
anomaly scores` is causal where it runs on the device. Per fold (models/training/cv_folds.py) it is scored on
- the held-out fight-surv clips: clip AUC (clip score = mean of the top 1/16 frame scores, as MIL pools);
- the held-out Ped2 test videos: frame AUC pooled over the fold's videos;
- the held-out fight-surv clips stitched end to end in a seeded order (one continuous state): frame AUC.
`summarise` gives mean, standard deviation and the per-fold values, plus the out-of-fold pooled figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from edge_vad.datasets import Clip
from edge_vad_models.training.cv_folds import Fold, frame_labels, stream_order
from edge_vad_models.training.validation import clip_score

log = logging.getLogger(__name__)

METRICS = ("fight_clip_auc", "ped2_frame_auc", "stream_frame_auc")


@dataclass
class Video:
    """One video's cached per-frame arrays (`parts`, each [T, ...]) and its labels."""

    clip: Clip
    parts: dict
    members: tuple = ()  # for a stitched stream: the videos it is made of, in order

    @property
    def name(self) -> str:
        return self.clip.name

    @property
    def frames(self) -> int:
        return len(next(iter(self.parts.values())))

    @property
    def labels(self) -> np.ndarray:
        return frame_labels(self.clip, self.frames)


def concat(videos: Sequence[Video], name: str = "stream") -> Video:
    """Videos end to end as one stream (parts concatenated; frame labels kept)."""
    parts = {k: np.concatenate([np.asarray(v.parts[k]) for v in videos]) for k in videos[0].parts}
    labels = np.concatenate([v.labels for v in videos])
    clip = Clip(name, videos[0].clip.path, int(labels.max()), name, labels)
    return Video(clip, parts, tuple(v.name for v in videos))


def auc(labels, scores) -> Optional[float]:
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None


Scorer = Callable[[Video], np.ndarray]


@dataclass
class FoldResult:
    fold: int
    metrics: dict
    clip_scores: dict = field(default_factory=dict)  # held-out clip -> clip score
    frame_scores: dict = field(default_factory=dict)  # held-out Ped2 video -> per-frame scores
    stream: Optional[np.ndarray] = None  # per-frame scores of the stitched stream
    stream_labels: Optional[np.ndarray] = None


def score_fold(fold: Fold, scorer: Scorer, data: dict, clip_scorer: Optional[Callable[[Video], float]] = None,
               stream_scorer: Optional[Scorer] = None) -> FoldResult:
    """Figures of one fitted design on its fold's held-out videos. clip_scorer: clip-level designs (baseline a)
    score a clip directly; default = top-k mean of the per-frame scores."""
    fights = [data[c.name] for c in fold.fight]
    cs = {v.name: (clip_scorer(v) if clip_scorer else clip_score(scorer(v))) for v in fights}
    metrics = {"fight_clip_auc": auc([v.clip.label for v in fights], [cs[v.name] for v in fights])}
    ped2 = [data[c.name] for c in fold.ped2]
    fs = {v.name: np.asarray(scorer(v), dtype=np.float64) for v in ped2}
    metrics["ped2_frame_auc"] = (auc(np.concatenate([v.labels for v in ped2]), np.concatenate([fs[v.name] for v in ped2]))
                                 if ped2 else None)
    stream = concat([data[c.name] for c in stream_order(list(fold.fight))])
    s = np.asarray((stream_scorer or scorer)(stream), dtype=np.float64)
    metrics["stream_frame_auc"] = auc(stream.labels, s)
    return FoldResult(fold.index, metrics, cs, fs, s, stream.labels)


def summarise(results: Sequence[FoldResult], data: dict) -> dict:
    """mean / std / per-fold of each metric over the folds that have it, and the out-of-fold pooled AUCs."""
    out: dict = {}
    for m in METRICS:
        vals = [r.metrics[m] for r in results if r.metrics.get(m) is not None]
        out[m] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "folds": [round(v, 4) for v in vals]}
    clips = {k: v for r in results for k, v in r.clip_scores.items()}
    out["fight_clip_auc_pooled"] = auc([data[k].clip.label for k in clips], list(clips.values()))
    frames = {k: v for r in results for k, v in r.frame_scores.items()}
    if frames:
        out["ped2_frame_auc_pooled"] = auc(np.concatenate([data[k].labels for k in frames]),
                                           np.concatenate(list(frames.values())))
    return out


def run_cv(folds: Sequence[Fold], data: dict, fit: Callable[[list], Scorer], progress: bool = True, **score_kw) -> tuple:
    """Fit on each fold's training videos, score its held-out ones; (summary, fold results)."""
    from tqdm import tqdm

    results = []
    for fold in tqdm(folds, desc="folds", unit="fold", disable=not progress, leave=False):
        scorer = fit([data[c.name] for c in fold.train])
        results.append(score_fold(fold, scorer, data, **score_kw))
    return summarise(results, data), results
