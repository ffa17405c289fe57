"""The paper's teacher -> student step for window designs: an AFED teacher (enhanced RWKV, MIL on video labels)
on the same per-frame vectors, and the window-statistics head distilled from it (issue 15 keeps TCVADS's
structure unless cross-validation shows a part hurts: this module is how it is checked).

Distillation into a logistic regression: Exp. (14)'s L_hard + lambda * L_soft(T) with L_soft the cross-entropy to
the teacher's temperature-softened probability sigmoid(z_teacher / T) (the KL up to a constant). A logistic
regression takes that loss exactly when every window appears twice, with targets 1 and 0 and sample weights
w * (y_mix) and w * (1 - y_mix), y_mix = (y + lambda * sigmoid(z_teacher / T)) / (1 + lambda).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from edge_vad_models.training.coarse import CoarseTrainConfig, InputBag, score_sequence, train_teacher
from edge_vad_models.training.cv_eval import Video
from edge_vad_models.training.window_design import FittedWindowHead, WindowDesign, training_set

PED2_REPEAT = 4  # Ped2 videos per epoch relative to fight-surv clips (as the previous recipe weighed them)


def frame_vectors(design: WindowDesign, v: Video) -> np.ndarray:
    """[T, D] the per-frame vectors a design's statistics are taken of (the teacher reads these)."""
    return np.concatenate([np.asarray(v.parts[p]).reshape(v.frames, -1) for p, _ in design.inputs], axis=1)


@dataclass
class Teacher:
    model: torch.nn.Module
    mean: np.ndarray
    scale: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        p = score_sequence(self.model, None, ((x - self.mean) / self.scale).astype(np.float32))
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return np.log(p / (1 - p))

    def __call__(self, v: Video, design: WindowDesign) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(frame_vectors(design, v))))

    def folded(self) -> torch.nn.Module:
        """A copy of the AFED teacher that reads RAW per-frame vectors: the standardisation folded into its input
        projection (W / scale, b - W (mean / scale)), as the device feeds it."""
        import copy

        model = copy.deepcopy(self.model).eval()
        with torch.no_grad():
            w = model.proj.weight
            scale = torch.as_tensor(self.scale, dtype=w.dtype)
            mean = torch.as_tensor(self.mean, dtype=w.dtype)
            model.proj.bias.sub_(w @ (mean / scale))
            w.div_(scale)
        return model


def fit_teacher(design: WindowDesign, videos: Sequence[Video], epochs: int = 20, seed: int = 0) -> Teacher:
    """AFED teacher with MIL top-k BCE on video labels, on standardised per-frame vectors."""
    xs = {v.name: frame_vectors(design, v) for v in videos}
    allx = np.concatenate(list(xs.values()))
    mean, scale = allx.mean(axis=0), allx.std(axis=0) + 1e-6
    bags = [InputBag(v.name, ((xs[v.name] - mean) / scale).astype(np.float32), v.clip.label)
            for v in videos for _ in range(PED2_REPEAT if v.name.startswith("ped2_") else 1)]
    cfg = CoarseTrainConfig(epochs=epochs, seed=seed)
    model, _ = train_teacher(bags, cfg, in_dim=allx.shape[1], progress=False)
    return Teacher(model.eval(), mean, scale)


def fit_distilled_head(design: WindowDesign, videos: Sequence[Video], teacher: Teacher, lam: float,
                       temperature: float, feats: dict | None = None) -> FittedWindowHead:
    """The window head fitted on L_hard + lam * L_soft(T) (module doc)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y, w = training_set(design, videos, feats)
    soft = []
    for v in videos:
        z = teacher.logits(frame_vectors(design, v))
        idx = np.arange(min(design.window // 2, v.frames - 1), v.frames, design.train_stride)
        soft.append(1.0 / (1.0 + np.exp(-z[idx] / temperature)))
    target = (y + lam * np.concatenate(soft)) / (1.0 + lam)
    scaler = StandardScaler().fit(x, sample_weight=w)
    xx = scaler.transform(x)
    model = LogisticRegression(C=design.C, max_iter=3000, tol=1e-5).fit(
        np.concatenate([xx, xx]), np.concatenate([np.ones(len(y)), np.zeros(len(y))]),
        sample_weight=np.concatenate([w * target, w * (1 - target)]))
    return FittedWindowHead(design, scaler, model, feats)
