"""Train the AFED teacher with MIL on video-level labels (paper Sec. IV-A, Exp. 10).

Inputs per video are either frame features [T, D] (fixed features, e.g. a user's CLIP
features) or cached trunk maps [T, C, 7, 7]; with trunk maps the deconvolution branch of
Adjust MobileNet is trained jointly (its pooled F_A is the frame feature), so the heatmap the
device shows is the map the detector learned to use.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from edge_vad.errors import EdgeVadError
from edge_vad_models.coarse_heads import AFEDTeacher
from edge_vad_models.losses import mil_topk_bce

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class InputBag:
    """One weakly labelled video: inputs [T, ...] (features or trunk maps), video label 0/1,
    optional frame labels (evaluation only)."""

    name: str
    inputs: np.ndarray
    label: int
    frame_labels: Optional[np.ndarray] = None


@dataclass(frozen=True)
class CoarseTrainConfig:
    # Defaults chosen for ~200 two-second clips: small and strongly regularised (a wider, less
    # regularised teacher fit the training clips perfectly and did no better on validation).
    dim: int = 64  # RWKV width of the teacher
    epochs: int = 20
    lr: float = 3e-3
    weight_decay: float = 0.05
    batch_size: int = 8
    max_frames: int = 32  # random crop per bag and step: bounds memory and adds variety
    dropout: float = 0.3
    sparsity: float = 0.0  # optional weight of the mean anomaly probability over anomalous bags' frames
    # (Sultani et al.'s sparsity term); off by default: it did not improve frame AUC in our synthetic checks
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


class PooledBranch(nn.Module):
    """Trunk maps [N, C, 7, 7] -> frame features [N, D]: the branch of Adjust MobileNet, pooled."""

    def __init__(self, branch: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.branch = branch

    def forward(self, trunk: torch.Tensor) -> torch.Tensor:
        return self.branch(trunk).mean(dim=(2, 3))


def _featurize(featurizer: Optional[nn.Module], x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x, dtype=np.float32))
    return featurizer(t) if featurizer is not None else t


def _crop(bag: InputBag, max_frames: int, rng: np.random.Generator) -> np.ndarray:
    n = len(bag.inputs)
    if n <= max_frames:
        return bag.inputs
    start = int(rng.integers(0, n - max_frames + 1))
    return bag.inputs[start:start + max_frames]


def _batch(featurizer, crops: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(c) for c in crops])
    flat = _featurize(featurizer, np.concatenate(crops))
    parts = torch.split(flat, lengths.tolist())
    padded = nn.utils.rnn.pad_sequence(parts, batch_first=True)
    return padded, lengths


@torch.no_grad()
def score_sequence(teacher: nn.Module, featurizer: Optional[nn.Module], inputs: np.ndarray,
                   chunk: int = 512) -> np.ndarray:
    """Per-frame anomaly probabilities of one whole video (causal, as on the device)."""
    teacher.eval()
    feats = torch.cat([_featurize(featurizer, inputs[i:i + chunk]) for i in range(0, len(inputs), chunk)])
    return torch.sigmoid(teacher(feats[None]))[0].numpy()


def train_teacher(train: Sequence[InputBag], cfg: CoarseTrainConfig, in_dim: int,
                  featurizer: Optional[nn.Module] = None,
                  validate: Optional[Callable[[nn.Module, Optional[nn.Module]], dict]] = None,
                  progress: bool = True) -> tuple[AFEDTeacher, list[dict]]:
    """MIL training (top-k BCE on the video label). `featurizer` (e.g. PooledBranch) trains with
    the teacher when given. Returns the teacher and the per-epoch history."""
    from tqdm import tqdm

    if not train or len({b.label for b in train}) < 2:
        raise EdgeVadError("coarse training needs both normal (0) and anomalous (1) videos in the training list")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    teacher = AFEDTeacher(in_dim, dim=cfg.dim, dropout=cfg.dropout)
    params = list(teacher.parameters()) + (list(featurizer.parameters()) if featurizer is not None else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    history: list[dict] = []
    bar = tqdm(range(cfg.epochs), desc="train coarse", unit="epoch", disable=not progress)
    for epoch in bar:
        teacher.train()
        if featurizer is not None:
            featurizer.train()
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            bags = [train[j] for j in order[i:i + cfg.batch_size]]
            x, lengths = _batch(featurizer, [_crop(b, cfg.max_frames, rng) for b in bags])
            labels = torch.tensor([float(b.label) for b in bags])
            logits = teacher(x)
            loss = mil_topk_bce(logits, labels, lengths)
            if cfg.sparsity:
                valid = (torch.arange(logits.shape[1])[None, :] < lengths[:, None]) & (labels[:, None] > 0)
                if valid.any():
                    loss = loss + cfg.sparsity * torch.sigmoid(logits)[valid].mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            losses.append(loss.item())
        sched.step()
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        if validate is not None and ((epoch + 1) % 10 == 0 or epoch + 1 == cfg.epochs):
            row.update(validate(teacher, featurizer))
        history.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
    return teacher, history
