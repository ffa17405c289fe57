"""The fine stage cross-validated in the coarse folds (issue 15: per-class video accuracy >= 0.8, normal included).

Classes of the shared data: normal (fight-surv noFight clips, Ped2 training videos), fighting (fight clips),
"bicycle or vehicle on a walkway" (Ped2 test videos: each contains one). Per fold the fine stage is trained on
the fold's training videos and predicts its held-out fight-surv clips and Ped2 test videos, whole videos as
`evaluate_fine` does; the out-of-fold predictions are pooled into per-class accuracies and a confusion matrix.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from edge_vad_models.training.cv_eval import Video
from edge_vad_models.training.cv_folds import Fold

log = logging.getLogger(__name__)

FINE_CLASSES = ("normal", "fighting", "bicycle or vehicle on a walkway")  # what the shared data gives


def fine_class(v: Video) -> int:
    if v.name.startswith("ped2_test_"):
        return 2
    return 1 if (v.clip.label and not v.name.startswith("ped2_")) else 0


def imagenet_ids(pooled: np.ndarray, classifier: Optional[torch.nn.Module] = None) -> np.ndarray:
    """Top-1 ImageNet class per frame from the pooled trunk feature (the backbone's own classifier)."""
    if classifier is None:
        from edge_vad_models.backbones import AdjustMobileNet

        classifier = AdjustMobileNet().classifier.eval()
    with torch.no_grad():
        return classifier(torch.from_numpy(np.asarray(pooled, np.float32))).argmax(dim=1).numpy()


def fine_bags(videos: Sequence[Video], features: Callable[[Video], np.ndarray], ids: dict) -> list:
    from edge_vad_models.training.fine import FineBag

    return [FineBag(v.name, features(v), ids[v.name], fine_class(v)) for v in videos]


def cv_fine(folds: Sequence[Fold], data: dict, features: Callable[[Video], np.ndarray], cfg, ids: dict,
            train_repeat: Callable[[Video], int] = lambda v: 1, progress: bool = False) -> dict:
    """Per-class accuracy of out-of-fold video predictions (and per fold), for a FineTrainConfig."""
    from edge_vad_models.fine.descriptions import DescriptionVocabulary
    from edge_vad_models.training.fine import train_fine, video_probabilities

    truth, pred, per_fold, seconds = [], [], [], []
    texts = DescriptionVocabulary.imagenet().texts
    for fold in folds:
        t0 = time.time()
        train = [data[c.name] for c in fold.train for _ in range(train_repeat(data[c.name]))]
        held = [data[c.name] for c in fold.held_out]
        result = train_fine(fine_bags(train, features, ids), [], list(FINE_CLASSES), texts, cfg, progress=progress)
        bags = fine_bags(held, features, ids)
        probs = video_probabilities(result.model, bags, result.description_rows)
        t, p = [b.class_index for b in bags], probs.argmax(axis=1).tolist()
        truth += t
        pred += p
        per_fold.append(float(np.mean(np.array(t) == np.array(p))))
        seconds.append(time.time() - t0)
        log.info("fine fold %d: accuracy %.3f (%.0f s)", fold.index, per_fold[-1], seconds[-1])
    truth_a, pred_a = np.array(truth), np.array(pred)
    confusion = np.zeros((len(FINE_CLASSES), len(FINE_CLASSES)), int)
    np.add.at(confusion, (truth_a, pred_a), 1)
    return {"per_class_accuracy": {n: float(confusion[c, c] / max(confusion[c].sum(), 1))
                                   for c, n in enumerate(FINE_CLASSES)},
            "accuracy": float((truth_a == pred_a).mean()), "fold_accuracy": per_fold,
            "confusion_matrix": confusion.tolist(), "confusion_axes": "rows = true class, columns = predicted",
            "seconds_per_fold": float(np.mean(seconds))}
