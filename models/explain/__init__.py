"""Explanations of a trained TCVADS checkpoint (paper Sec. V-E): what a person can look at.

- heatmaps: class-activation heatmaps from F_A weighted by the coarse heads (no gradients), overlays,
  contact sheet, teacher vs student figure (paper Fig. 7);
- pointing: pointing-game hit rate of those heatmaps against pixel masks (UCSD Ped2);
- tsne: t-SNE of fine video features and class text embeddings (paper Fig. 8);
- lime_r2: LIME-style local surrogate R^2 of the coarse and fine stages (paper Table IX).

This module holds what tsne and lime_r2 share: which videos are the checkpoint's validation videos,
their frame classes, and their trunk maps (from the training cache when present, else computed).
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

VALIDATION_GROUPS = ("fight_val", "ped2_val", "ped2_normal_val")  # keys of metrics.json "split" (default recipe)
DEFAULT_TRUNK_CACHE = Path("runs/cache/trunk")  # where `edge-vad train default` caches trunk maps


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG in memory, then write it atomically (never a half-written file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(Path(path), buf.getvalue())


def validation_clips(checkpoint_dir: Path, data_root: Path) -> list[Clip]:
    """The checkpoint's validation videos, in a fixed order (fight-surv, then Ped2).

    The names come from the checkpoint's metrics.json ("split", written by the default recipe) so that a
    checkpoint is explained on the videos it was validated on; without it, the recipe's own split."""
    from edge_vad_models.training.default_recipe import DataSplit

    split = DataSplit(Path(data_root))
    metrics = Path(checkpoint_dir) / "metrics.json"
    recorded = json.loads(metrics.read_text()).get("split", {}) if metrics.is_file() else {}
    by_name = {c.name: c for c in split.everything}
    clips = []
    for group in VALIDATION_GROUPS:
        names = recorded.get(group, [c.name for c in getattr(split, group)])
        missing = [n for n in names if n not in by_name]
        if missing:
            raise EdgeVadError(f"validation videos {missing[:3]} of {checkpoint_dir} are not in {data_root}; "
                               "pass the --data folder the checkpoint was trained from")
        clips += [by_name[n] for n in names]
    return clips


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
    from edge_vad_models.training.default_recipe import DEFAULT_FINE_CLASSES

    if tuple(class_names) != tuple(DEFAULT_FINE_CLASSES):
        raise EdgeVadError(f"this explanation knows the default recipe's classes {list(DEFAULT_FINE_CLASSES)}, the "
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
    """Trunk maps [T, C, 7, 7] of a clip: read from `cache_dir/<name>.npy` when there, else computed from the video
    with a runner made on first need (the cache is never written here: it belongs to training)."""

    cache_dir: Optional[Path]
    make_runner: Callable[[], Callable[[list], np.ndarray]]
    _runner: Optional[Callable] = None
    computed: int = 0  # videos that were not in the cache

    def __call__(self, clip: Clip) -> np.ndarray:
        if self.cache_dir is not None:
            path = Path(self.cache_dir) / f"{clip.name}.npy"
            if path.is_file():
                return np.load(path, mmap_mode="r")
        from edge_vad_models.features import trunk_maps_of

        if self._runner is None:
            self._runner = self.make_runner()
        self.computed += 1
        log.info("trunk maps of %s not cached; computing them from %s", clip.name, clip.path)
        return trunk_maps_of(self._runner, clip.path)
