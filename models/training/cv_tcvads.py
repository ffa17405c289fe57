"""The previous default design (the paper's structure as shipped before issue 15), cross-validated in the same
folds as the window designs, so the model card can say with figures where the new design departs and why.

Per fold, exactly the old recipe's steps on the fold's training videos: the deconvolution branch trained with
MIL through a first AFED teacher on pooled F_A; the AFED teacher trained again on [F, M]
(edge_vad.head_input "feature+motion"); the QACM student (W = 31) distilled at the shipped temperature (BO of T
is left out here: it moved the held-out KL, not the AUCs, in the shipped run). Ped2 videos are repeated 4x per
epoch as the old recipe did.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from edge_vad.head_input import FEATURE_MOTION, head_input_dim, head_inputs
from edge_vad_models.backbones import AdjustMobileNet
from edge_vad_models.training.bags import FeatureBag
from edge_vad_models.training.coarse import CoarseTrainConfig, InputBag, PooledBranch, train_teacher
from edge_vad_models.training.cv_eval import Video
from edge_vad_models.training.frame_cache import FrameCache

log = logging.getLogger(__name__)

OLD_TEMPERATURE = 3.974  # the shipped model's BO choice (models/default/metrics.json before issue 15)
PED2_REPEAT = 4


def fit_tcvads_fold(train: Sequence[Video], cache: FrameCache, epochs: int = 20, progress: bool = False):
    """Train branch + teacher + student on one fold; returns a scorer Video -> per-frame probabilities."""
    from edge_vad_models.training.distill import DistillConfig, predict_logits, teacher_logits_for, train_student

    cfg = CoarseTrainConfig(epochs=epochs)
    torch.manual_seed(cfg.seed)
    repeat = lambda v: PED2_REPEAT if v.name.startswith("ped2_") else 1  # noqa: E731
    trunk = {v.name: cache.get(v.name, "trunk") for v in train}
    model = AdjustMobileNet()
    featurizer = PooledBranch(model.branch)
    bags = [InputBag(v.name, trunk[v.name], v.clip.label) for v in train for _ in range(repeat(v))]
    train_teacher(bags, cfg, in_dim=model.branch_channels, featurizer=featurizer, progress=progress)
    featurizer.eval()

    def pooled_fa(name: str) -> np.ndarray:
        t = cache.get(name, "trunk")
        with torch.no_grad():
            return np.concatenate([featurizer(torch.from_numpy(np.asarray(t[i:i + 256], dtype=np.float32))).numpy()
                                   for i in range(0, len(t), 256)])

    feats = {v.name: head_inputs(pooled_fa(v.name), FEATURE_MOTION) for v in train}
    in_dim = head_input_dim(FEATURE_MOTION, model.branch_channels)
    teacher, _ = train_teacher([InputBag(v.name, feats[v.name], v.clip.label) for v in train for _ in range(repeat(v))],
                               cfg, in_dim=in_dim, progress=progress)
    fbags = [FeatureBag(v.name, feats[v.name], v.clip.label) for v in train for _ in range(repeat(v))]
    student = train_student(fbags, teacher_logits_for(teacher, fbags), OLD_TEMPERATURE,
                            DistillConfig(window=31, epochs=60, lam=3.0), progress=progress)

    def scorer(v: Video) -> np.ndarray:
        fa = np.concatenate([pooled_fa(n) for n in v.members]) if v.members else pooled_fa(v.name)
        z = predict_logits(student, [FeatureBag(v.name, head_inputs(fa, FEATURE_MOTION), 0)])[0]
        return 1.0 / (1.0 + np.exp(-z))

    return scorer
