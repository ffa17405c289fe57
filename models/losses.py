"""Losses of TCVADS: MIL top-k BCE (coarse, Exp. 10), distillation KL (Exp. 11), alignment (Exp. 17),
text contrast (Exp. 18) and the fine-stage total (Exp. 19).

Reductions are means over the batch (and over valid steps for distillation), so loss weights do not change
with batch size or sequence length; the paper writes Exp. (11) as a sum.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from edge_vad.constants import (
    ALIGN_L2_LAMBDA1,
    ALIGN_WEIGHT_ALPHA,
    CONTRAST_L2_LAMBDA2,
    CONTRAST_MARGIN_DELTA,
    CONTRAST_WEIGHT_BETA,
    MIL_TOPK_DIVISOR,
)
from edge_vad.errors import EdgeVadError


def _valid_mask(batch: int, length: int, lengths: Tensor | None, device: torch.device) -> Tensor:
    """[B, T] bool, True on steps t < lengths[b] (all True when lengths is None)."""
    steps = torch.arange(length, device=device)
    if lengths is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    if lengths.shape != (batch,):
        raise EdgeVadError(f"lengths must have shape [{batch}], got {list(lengths.shape)}")
    if bool(((lengths < 1) | (lengths > length)).any()):
        raise EdgeVadError(f"every length must be in 1..{length}, got {lengths.tolist()}")
    return steps[None, :] < lengths.to(device)[:, None]


def mil_topk_bce(logits: Tensor, video_labels: Tensor, lengths: Tensor | None = None) -> Tensor:
    """MIL loss: per bag, the mean of its k largest snippet logits, k = max(1, length // MIL_TOPK_DIVISOR),
    against the video label with BCE-with-logits; mean over bags. Steps at or beyond `lengths` are ignored.
    """
    if logits.dim() != 2 or video_labels.shape != logits.shape[:1]:
        raise EdgeVadError(f"expected logits [B, T] and labels [B], got {list(logits.shape)} and "
                           f"{list(video_labels.shape)}")
    batch, length = logits.shape
    valid = _valid_mask(batch, length, lengths, logits.device)
    counts = valid.sum(dim=1)
    k = torch.clamp(counts // MIL_TOPK_DIVISOR, min=1)  # [B]
    ranked = logits.masked_fill(~valid, float("-inf")).sort(dim=1, descending=True).values
    in_topk = torch.arange(length, device=logits.device)[None, :] < k[:, None]
    # where(), not multiply: the -inf of padded steps never enters the sum (nor its gradient).
    bag_logit = torch.where(in_topk, ranked, torch.zeros_like(ranked)).sum(dim=1) / k.to(logits.dtype)
    return F.binary_cross_entropy_with_logits(bag_logit, video_labels.to(logits.dtype))


def kd_soft_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
                 mask: Tensor | None = None) -> Tensor:
    """Hinton distillation for binary logits: T^2 * KL(teacher || student) between the Bernoulli
    distributions sigmoid(z / T), averaged over the steps where `mask` is True (all steps if None).
    The teacher is treated as a constant (no gradient flows into it).
    """
    if temperature <= 0:
        raise EdgeVadError(f"distillation temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise EdgeVadError(f"student and teacher logits differ in shape: {list(student_logits.shape)} vs "
                           f"{list(teacher_logits.shape)}")
    zs = student_logits / temperature
    zt = teacher_logits.detach().to(zs.dtype) / temperature
    p = torch.sigmoid(zt)
    # log-sigmoid form: finite for any logits (no log(0)).
    kl = p * (F.logsigmoid(zt) - F.logsigmoid(zs)) + (1 - p) * (F.logsigmoid(-zt) - F.logsigmoid(-zs))
    if mask is None:
        mean = kl.mean()
    else:
        if mask.shape != kl.shape:
            raise EdgeVadError(f"mask shape {list(mask.shape)} differs from logits shape {list(kl.shape)}")
        mask = mask.to(torch.bool)
        if not bool(mask.any()):
            raise EdgeVadError("distillation mask selects no step; pass a mask with at least one True")
        mean = torch.where(mask, kl, torch.zeros_like(kl)).sum() / mask.sum()
    return mean * temperature**2


def l2_penalty(params: Iterable[Tensor] | None) -> Tensor | float:
    """sum ||theta||^2 over the given tensors (0 when None)."""
    if params is None:
        return 0.0
    total: Tensor | float = 0.0
    for p in params:
        total = total + p.pow(2).sum()
    return total


def align_loss(logits: Tensor, labels: Tensor, params: Iterable[Tensor] | None = None,
               l2: float = ALIGN_L2_LAMBDA1) -> Tensor:
    """Exp. (17): cross-entropy of the class logits [B, C] against labels [B] (mean over the batch)
    + l2 * ||theta_align||^2. MIL pooling to video-level logits happens before this call."""
    return F.cross_entropy(logits, labels) + l2 * l2_penalty(params)


def contrast_loss(text_emb: Tensor, normal_index: int = 0, margin: float = CONTRAST_MARGIN_DELTA,
                  params: Iterable[Tensor] | None = None, l2: float = CONTRAST_L2_LAMBDA2) -> Tensor:
    """Exp. (18): sum over anomaly classes j of max(0, cos(t_normal, t_j) - margin) + l2 * ||theta||^2,
    for class text embeddings [C, d]: pushes each anomaly class away from the normal class."""
    if text_emb.dim() != 2 or not 0 <= normal_index < text_emb.shape[0]:
        raise EdgeVadError(f"expected text embeddings [C, d] and 0 <= normal_index < C, got "
                           f"{list(text_emb.shape)} and {normal_index}")
    cos = F.cosine_similarity(text_emb[normal_index][None, :], text_emb, dim=-1)  # [C]
    anomaly = torch.arange(text_emb.shape[0], device=text_emb.device) != normal_index
    hinge = torch.clamp(cos - margin, min=0.0)
    return torch.where(anomaly, hinge, torch.zeros_like(hinge)).sum() + l2 * l2_penalty(params)


def fine_total_loss(align: Tensor, contrast: Tensor, alpha: float = ALIGN_WEIGHT_ALPHA,
                    beta: float = CONTRAST_WEIGHT_BETA) -> Tensor:
    """Exp. (19): alpha * L_align + beta * L_contrast."""
    return alpha * align + beta * contrast
