"""The default recipe's data: every video of ../shared/data as per-frame arrays, and the F_A branch fitted on them.

- the frame cache (models/training/frame_cache.py) of every fight-surv clip and Ped2 video, exact-area resize;
- the "projection" branch: F_A = the first BRANCH_CHANNELS principal components of the trunk map's positions
  (label-free, fitted on the training videos only: a fold's branch never sees its held-out videos);
- per video: the heads' input [pooled trunk, mean and max of |F_A(t) - F_A(t-1)|] (edge_vad.head_input
  "trunk+fa-motion", the very function the device runs), the pooled trunk (baseline a), the grey-level frame
  difference (baselines b, c) and the frame rate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edge_vad.datasets import Clip
from edge_vad.head_input import TRUNK_FA_MOTION, head_inputs
from edge_vad_models.backbones import DEFAULT_BRANCH_CHANNELS
from edge_vad_models.training.cv_eval import Video
from edge_vad_models.training.cv_folds import Fold, default_folds
from edge_vad_models.training.frame_cache import FrameCache, build_cache

log = logging.getLogger(__name__)

PCA_FRAMES_PER_VIDEO = 6  # frames per video whose 49 positions the branch's PCA sees (seeded choice)
PCA_SEED = 0
FPS_FILE = "fps.json"
IMAGE_FOLDER_FPS = 10.0  # UCSD Ped2 (edge_vad.sources.image_folder.DEFAULT_FOLDER_FPS)


@dataclass(frozen=True)
class Branch:
    """F_A = components @ (trunk position - mean): [C, 1280] and [1280]."""

    mean: np.ndarray
    components: np.ndarray

    def maps(self, trunk: np.ndarray, chunk: int = 128) -> np.ndarray:
        """Trunk maps [T, 1280, h, w] -> F_A [T, C, h, w] (float32)."""
        out = []
        for i in range(0, len(trunk), chunk):
            t = np.asarray(trunk[i:i + chunk], np.float32) - self.mean[None, :, None, None]
            out.append(np.einsum("tchw,kc->tkhw", t, self.components, optimize=True))
        return np.concatenate(out)


def fit_branch(cache: FrameCache, clips: Sequence[Clip], channels: int = DEFAULT_BRANCH_CHANNELS,
               seed: int = PCA_SEED) -> Branch:
    rng = np.random.default_rng(seed)
    rows = []
    for clip in clips:
        t = cache.get(clip.name, "trunk")
        idx = np.sort(rng.choice(len(t), min(len(t), PCA_FRAMES_PER_VIDEO), replace=False))
        rows.append(np.asarray(t[idx], np.float32).transpose(0, 2, 3, 1).reshape(-1, t.shape[1]))
    x = np.concatenate(rows).astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred)  # the covariance's eigenvectors: PCA without an SVD
    order = np.argsort(values)[::-1][:channels]
    components = vectors[:, order].T
    components *= np.where(components[np.arange(len(components)), np.abs(components).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    return Branch(mean.astype(np.float32), components.astype(np.float32))


def clip_fps(clip: Clip) -> float:
    if Path(clip.path).is_dir():
        return IMAGE_FOLDER_FPS
    import cv2

    cap = cv2.VideoCapture(str(clip.path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    return fps if 1.0 <= fps <= 240.0 else 25.0


def frame_rates(cache: FrameCache, clips: Sequence[Clip]) -> dict[str, float]:
    path = cache.folder / FPS_FILE
    known = json.loads(path.read_text()) if path.is_file() else {}
    missing = [c for c in clips if c.name not in known]
    if missing:
        from edge_vad_models.features import write_json_atomic

        known.update({c.name: clip_fps(c) for c in missing})
        write_json_atomic(path, known)
    return {c.name: float(known[c.name]) for c in clips}


def video_parts(cache: FrameCache, branch: Branch, clip: Clip) -> dict[str, np.ndarray]:
    trunk = cache.get(clip.name, "trunk")
    maps = branch.maps(trunk)
    pooled = np.asarray(cache.get(clip.name, "pooled"))
    return {"head": head_inputs(maps.mean(axis=(2, 3)), TRUNK_FA_MOTION, pooled, maps),
            "pooled": pooled, "pixdiff": np.asarray(cache.get(clip.name, "pixdiff"))}


@dataclass
class DefaultData:
    """Folds, the cache and per-video arrays for one branch (`with_branch` re-derives them for another)."""

    folds: list
    cache: FrameCache
    clips: dict  # name -> Clip
    fps: dict  # name -> frames per second
    branch: Optional[Branch] = None
    videos: Optional[dict] = None  # name -> Video

    @classmethod
    def load(cls, data_root: Path, cache_dir: Path, progress: bool = True) -> "DefaultData":
        folds = default_folds(Path(data_root))
        clips = {c.name: c for f in folds for c in (*f.train, *f.held_out)}
        cache = build_cache(list(clips.values()), Path(cache_dir), progress=progress)
        return cls(folds, cache, clips, frame_rates(cache, list(clips.values())))

    def with_branch(self, branch: Branch, progress: bool = True) -> "DefaultData":
        from tqdm import tqdm

        videos = {name: Video(clip, video_parts(self.cache, branch, clip))
                  for name, clip in tqdm(self.clips.items(), desc="head inputs", unit="video", disable=not progress,
                                         leave=False)}
        return DefaultData(self.folds, self.cache, self.clips, self.fps, branch, videos)

    def fold_train(self, fold: Fold) -> list:
        return [self.videos[c.name] for c in fold.train]
