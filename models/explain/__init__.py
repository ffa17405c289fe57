"""Explanations of a trained TCVADS checkpoint (paper Sec. V-E): what a person can look at.

- heatmaps: the device's heatmap ("fa-motion" for trunk+fa-motion checkpoints; class activation from F_A
  weighted by each coarse head for older ones, no gradients), overlays, contact sheet, teacher vs student (Fig. 7);
- pointing: pointing-game hit rate of those heatmaps against pixel masks (UCSD Ped2);
- tsne: t-SNE of fine video features and class text embeddings (paper Fig. 8);
- lime_r2: LIME-style local surrogate R^2 of the coarse and fine stages (paper Table IX).

This module holds what tsne and lime_r2 share: which videos they explain (the videos the checkpoint's
cross-validation folds hold out), their frame classes, and their trunk maps (from the training cache when
present, else computed).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edge_vad.datasets import Clip
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

DEFAULT_TRUNK_CACHE = Path("runs/cache/frames")  # `edge-vad train default`'s frame cache (<video>.trunk.npy)
OLD_SPLIT_GROUPS = ("fight_val", "ped2_val", "ped2_normal_val")  # metrics.json "split" before cross-validation


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG in memory, then write it atomically (never a half-written file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(Path(path), buf.getvalue())


def recorded_folds(checkpoint_dir: Path, data_root: Path) -> list[dict]:
    """Held-out video names per fold, [{"fight": [...], "ped2": [...]}]: from the checkpoint's metrics.json
    ("split", written by the default recipe) so a checkpoint is explained on its own folds; a checkpoint from
    before cross-validation recorded one validation split, taken as one fold; without a record, the recipe's
    folds of `data_root` (models/training/cv_folds.py)."""
    metrics = Path(checkpoint_dir) / "metrics.json"
    split = json.loads(metrics.read_text()).get("split", {}) if metrics.is_file() else {}
    if split.get("folds"):
        return [{"fight": list(f.get("fight", [])), "ped2": list(f.get("ped2", []))} for f in split["folds"]]
    if any(g in split for g in OLD_SPLIT_GROUPS):
        return [{"fight": list(split.get("fight_val", [])),
                 "ped2": list(split.get("ped2_val", [])) + list(split.get("ped2_normal_val", []))}]
    from edge_vad_models.training.cv_folds import default_folds

    return [{"fight": [c.name for c in f.fight], "ped2": [c.name for c in f.ped2]} for f in default_folds(data_root)]


def held_out_clips(checkpoint_dir: Path, data_root: Path, fold: Optional[int] = None) -> list[Clip]:
    """The videos the folds hold out (`fold` None: every fold's, so every video once; else fold `fold`'s), in a
    fixed order: fight-surv clips, then Ped2 videos, each by fold (so `spread` keeps both datasets).

    Fold k's videos are unseen by fold k's models only: the shipped models are refitted on ALL the data after
    cross-validation (models/training/default_recipe.py step 3), so for them these videos are training data."""
    from edge_vad.datasets import fight_surv_clips, ped2_videos

    folds = recorded_folds(checkpoint_dir, data_root)
    if fold is not None:
        if not 0 <= fold < len(folds):
            raise EdgeVadError(f"fold {fold} does not exist; {checkpoint_dir} has folds 0-{len(folds) - 1}")
        folds = [folds[fold]]
    ped2_train, ped2_test = ped2_videos(Path(data_root))
    by_name = {c.name: c for c in [*fight_surv_clips(Path(data_root)), *ped2_train, *ped2_test]}
    names = [n for f in folds for n in f["fight"]] + [n for f in folds for n in f["ped2"]]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise EdgeVadError(f"held-out videos {missing[:3]} of {checkpoint_dir} are not in {data_root}; "
                           "pass the --data folder the checkpoint was trained from")
    if not names:
        raise EdgeVadError(f"no held-out videos in the folds of {checkpoint_dir}; nothing to explain")
    return [by_name[n] for n in names]


def spread(items: Sequence, n: Optional[int]) -> list:
    """n items evenly spaced over `items` (all of them when n is None or >= len): both datasets stay represented."""
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise EdgeVadError(f"the number of videos must be >= 1, got {n}")
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))]


def frame_classes(clip: Clip, n_frames: int, class_names: Sequence[str]) -> np.ndarray:
    """Fine-stage class index of every frame, as the default recipe labels its bags: fight-surv fight -> "fighting",
    Ped2 anomalous frames -> the walkway-anomaly class, everything else -> "normal" (index 0)."""
    from edge_vad_models.training.cv_fine import FINE_CLASSES

    if tuple(class_names) != tuple(FINE_CLASSES):
        raise EdgeVadError(f"this explanation knows the default recipe's classes {list(FINE_CLASSES)}, the "
                           f"checkpoint has {list(class_names)}; use a checkpoint from `edge-vad train default`")
    if clip.frame_labels is not None:  # Ped2 test video: frame-level truth
        labels = np.zeros(n_frames, dtype=np.int64)
        known = min(n_frames, len(clip.frame_labels))
        labels[:known] = np.asarray(clip.frame_labels[:known]) * 2
        return labels
    if clip.name.startswith("ped2_"):
        return np.zeros(n_frames, dtype=np.int64)
    return np.full(n_frames, int(clip.label), dtype=np.int64)  # fight-surv: the clip is fight throughout or not


@dataclass
class TrunkSource:
    """Trunk maps [T, C, 7, 7] of a clip: read from the training cache when there (`cache_dir/<name>.trunk.npy`,
    the frame cache since issue 15, float16; or `<name>.npy`, the older trunk cache), else computed from the video
    with a runner made on first need (the cache is never written here: it belongs to training)."""

    cache_dir: Optional[Path]
    make_runner: Callable[[], Callable[[list], np.ndarray]]
    _runner: Optional[Callable] = None
    computed: int = 0  # videos that were not in the cache

    def __call__(self, clip: Clip) -> np.ndarray:
        if self.cache_dir is not None:
            for path in (Path(self.cache_dir) / f"{clip.name}.trunk.npy", Path(self.cache_dir) / f"{clip.name}.npy"):
                if path.is_file():
                    return np.asarray(np.load(path, mmap_mode="r"), dtype=np.float32)
        from edge_vad_models.features import trunk_maps_of

        if self._runner is None:
            self._runner = self.make_runner()
        self.computed += 1
        log.info("trunk maps of %s not cached; computing them from %s", clip.name, clip.path)
        return trunk_maps_of(self._runner, clip.path)
