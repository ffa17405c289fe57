"""FeatureBag: one video as a sequence of per-frame (or per-snippet) features with its weak label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from edge_vad.errors import EdgeVadError


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class FeatureBag:
    """features [T, D] float32; label 0 (normal) / 1 (anomalous) for the whole video;
    frame_labels [T] 0/1 where frame-level ground truth is known (evaluation only, never for training)."""

    name: str
    features: np.ndarray
    label: int
    frame_labels: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[0] < 1:
            raise EdgeVadError(f"bag '{self.name}': features must be [T>=1, D], got shape {list(self.features.shape)}")
        if self.label not in (0, 1):
            raise EdgeVadError(f"bag '{self.name}': video label must be 0 or 1, got {self.label!r}")
        if self.frame_labels is not None and self.frame_labels.shape != (self.features.shape[0],):
            raise EdgeVadError(f"bag '{self.name}': frame_labels must have shape [{self.features.shape[0]}], "
                               f"got {list(self.frame_labels.shape)}")

    def __len__(self) -> int:
        return int(self.features.shape[0])
