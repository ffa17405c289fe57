"""ImageNet-1k class names (short human names, index order) and top-k labels from logits.

The backbones' own classifiers give ImageNet logits; their top labels become the frame
descriptions of the `lite0-minilm` fine stage. The names ship as package data
(`imagenet_classes.txt`, one per line, the public list open_clip carries as IMAGENET_CLASSNAMES),
so this works from an installed wheel as well as from the checkout.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np

from edge_vad.errors import EdgeVadError

IMAGENET_NUM_CLASSES = 1000  # ImageNet-1k (ILSVRC-2012) classifier width
_CLASSES_FILE = "imagenet_classes.txt"


@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    try:
        text = resources.files("edge_vad_models").joinpath(_CLASSES_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError) as exc:
        raise EdgeVadError(
            f"ImageNet class list {_CLASSES_FILE} is missing from edge_vad_models ({exc}); reinstall edge-vad"
        ) from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != IMAGENET_NUM_CLASSES:
        raise EdgeVadError(
            f"{_CLASSES_FILE} lists {len(names)} classes, expected {IMAGENET_NUM_CLASSES}; reinstall edge-vad"
        )
    return names


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in classifier index order (a fresh list each call)."""
    return list(_class_names())


def top_labels(logits: Any, k: int = 5) -> list[list[str]]:
    """Names of the k highest-scoring classes per row of `logits` ([B, 1000] or [1000]), best first.

    Accepts a torch tensor or anything numpy can read. Ties keep the lower class index first.
    """
    if hasattr(logits, "detach"):  # torch tensor, without importing torch here
        logits = logits.detach().cpu().numpy()
    scores = np.asarray(logits, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[None, :]
    if scores.ndim != 2 or scores.shape[1] != IMAGENET_NUM_CLASSES:
        raise EdgeVadError(f"top_labels expects logits of shape [B, {IMAGENET_NUM_CLASSES}], got {list(scores.shape)}")
    if not 1 <= k <= IMAGENET_NUM_CLASSES:
        raise EdgeVadError(f"top_labels k must be in 1..{IMAGENET_NUM_CLASSES}, got {k}")
    names = _class_names()
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[names[i] for i in row] for row in order]
