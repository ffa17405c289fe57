"""FineStage: the fine-grained classifier of TCVADS (paper Sec. IV-B, Exp. 15-19; DESIGN.md "Stage 2").

Video side: per-frame image features [B, T, F] -> linear to d -> EnhancedRWKV (two TimeMix blocks, ending in
its own LayerNorm) -> linear to the text space D -> L2 normalise.
Text side: per class, the PromptLearner's triplet text (learnable context + label + frame description) through
the frozen text encoder while training; after `freeze_text()` (or `use_text_table(...)`) a constant table
[C, K, D], exactly what the device gets.
Logits: cosine(video_t, text_{c, desc_t}) / tau for every snippet t and class c (Exp. 15-16; softmax over
classes gives p). Video level (MIL): per class, the mean of the k largest snippet logits, k = max(1, T // 16)
(MIL_TOPK_DIVISOR, as RTFM / VadCLIP), over each video's valid steps.
Loss (Exp. 19): alpha * [CE(video logits, class) + lambda1 ||theta_video||^2]
                + beta * [sum_j max(0, cos(t_normal, t_j) - delta) + lambda2 ||theta_prompt||^2].

The class list is data (`class_names`), e.g. XD_VIOLENCE_CLASSES or ("normal", "fighting", ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_vad.constants import CLIP_TAU, FINE_HIDDEN_DIM, MIL_TOPK_DIVISOR, PROMPT_CONTEXT_TOKENS, RWKV_BLOCKS
from edge_vad.errors import EdgeVadError
from edge_vad_models.fine.encoders import TextEncoder
from edge_vad_models.fine.prompt import PromptLearner, TextTable, average_embeddings
from edge_vad_models.losses import align_loss, contrast_loss, fine_total_loss
from edge_vad_models.rwkv import EnhancedRWKV

DEFAULT_HIDDEN_DIM = FINE_HIDDEN_DIM


@dataclass(frozen=True)
class FineOutput:
    snippet_logits: Tensor  # [B, T, C]  cosine / tau per step and class
    video_logits: Tensor  # [B, C]  MIL top-k mean over valid steps, per class
    # [C, D] description-averaged class text: over this batch's descriptions while the prompts are live,
    # over all descriptions once the table is frozen (the contrast loss of Exp. 18 reads it).
    class_text: Tensor

    @property
    def video_probs(self) -> Tensor:
        return self.video_logits.softmax(dim=-1)

    @property
    def snippet_probs(self) -> Tensor:
        return self.snippet_logits.softmax(dim=-1)


def mil_topk_mean(snippet_logits: Tensor, lengths: Tensor | None = None,
                  divisor: int = MIL_TOPK_DIVISOR) -> Tensor:
    """[B, T, C] -> [B, C]: per video and class, the mean of the k largest logits among the first lengths[b]
    steps, k = max(1, lengths[b] // divisor)."""
    batch, steps, _ = snippet_logits.shape
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long, device=snippet_logits.device)
    lengths = lengths.to(snippet_logits.device).long()
    if lengths.shape != (batch,) or bool(((lengths < 1) | (lengths > steps)).any()):
        raise EdgeVadError(f"lengths must be [{batch}] values in 1..{steps}, got {lengths.tolist()}")
    time = torch.arange(steps, device=snippet_logits.device)
    valid = (time[None, :] < lengths[:, None])[..., None]  # [B, T, 1]
    k = torch.clamp(lengths // divisor, min=1)  # [B]
    ranked = snippet_logits.masked_fill(~valid, float("-inf")).sort(dim=1, descending=True).values
    in_topk = (time[None, :] < k[:, None])[..., None]
    # where(), not multiply: padded steps' -inf never enters the sum or its gradient.
    return torch.where(in_topk, ranked, torch.zeros_like(ranked)).sum(dim=1) / k[:, None].to(ranked.dtype)


class FineStage(nn.Module):
    """Video features x class texts -> per-snippet and per-video class logits (see module doc)."""

    def __init__(self, class_names: Sequence[str], text_encoder: TextEncoder, descriptions: Sequence[str],
                 feature_dim: int, hidden_dim: int = DEFAULT_HIDDEN_DIM, n_ctx: int = PROMPT_CONTEXT_TOKENS,
                 class_specific_ctx: bool = False, tau: float = CLIP_TAU, rwkv_blocks: int = RWKV_BLOCKS,
                 normal_class: str | int = 0, mil_divisor: int = MIL_TOPK_DIVISOR):
        super().__init__()
        if len(class_names) < 2:
            raise EdgeVadError(f"the fine stage needs at least 2 classes, got {list(class_names)}")
        if tau <= 0:
            raise EdgeVadError(f"temperature tau must be > 0, got {tau}")
        self.class_names = tuple(class_names)
        if isinstance(normal_class, str):
            if normal_class not in self.class_names:
                raise EdgeVadError(f"normal class {normal_class!r} is not among the classes {list(class_names)}")
            normal_class = self.class_names.index(normal_class)
        if not 0 <= normal_class < len(self.class_names):
            raise EdgeVadError(f"normal class index {normal_class} out of range for {len(self.class_names)} classes")
        self.normal_index = int(normal_class)
        self.feature_dim = feature_dim
        self.tau = tau
        self.mil_divisor = mil_divisor
        self.in_proj = nn.Linear(feature_dim, hidden_dim)
        self.rwkv = EnhancedRWKV(hidden_dim, n_blocks=rwkv_blocks)  # ends with its LayerNorm (paper Exp. 9)
        self.out_proj = nn.Linear(hidden_dim, text_encoder.embed_dim)
        self.prompt = PromptLearner(text_encoder, self.class_names, descriptions, n_ctx=n_ctx,
                                    class_specific=class_specific_ctx)
        self.register_buffer("text_table", None)  # [C, K, D] once frozen

    # ---- text side -------------------------------------------------------------------------------------
    @property
    def text_frozen(self) -> bool:
        return self.text_table is not None

    def use_text_table(self, table: TextTable | np.ndarray | Tensor | None) -> None:
        """Use a constant [C, K, D] table for the text side (None: back to the PromptLearner)."""
        if table is None:
            self.text_table = None
            return
        values = table.table if isinstance(table, TextTable) else table
        values = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values,
                                 dtype=torch.float32)
        expected = (len(self.class_names), self.prompt.num_descriptions, self.prompt.text_encoder.embed_dim)
        if tuple(values.shape) != expected:
            raise EdgeVadError(f"text table shape {list(values.shape)} differs from [classes, descriptions, dim] "
                               f"= {list(expected)}")
        self.text_table = F.normalize(values, dim=-1).to(self.in_proj.weight.device)

    def freeze_text(self) -> TextTable:
        """Evaluate the learned prompts once and switch to that constant table; returns it for export."""
        table = self.prompt.export_text_table()
        self.use_text_table(table)
        return table

    # ---- video side ------------------------------------------------------------------------------------
    def video_features(self, frame_feats: Tensor) -> Tensor:
        """[B, T, F] per-frame image features -> [B, T, D] L2-normalised video features."""
        if frame_feats.dim() != 3 or frame_feats.shape[-1] != self.feature_dim:
            raise EdgeVadError(f"FineStage expects frame features [B, T, {self.feature_dim}], "
                               f"got {list(frame_feats.shape)}")
        x = self.rwkv(self.in_proj(frame_feats.float()))
        return F.normalize(self.out_proj(x), dim=-1)

    def forward(self, frame_feats: Tensor, description_ids: Tensor | None = None,
                lengths: Tensor | None = None) -> FineOutput:
        """frame_feats [B, T, F]; description_ids [B, T] (ids into `descriptions`, one per step) or None to use
        the description-averaged class text; lengths [B] valid steps per video (None: all)."""
        video = self.video_features(frame_feats)  # [B, T, D]
        batch, steps, _ = video.shape
        if description_ids is None:
            all_text = self.prompt() if self.text_table is None else self.text_table  # [C, K, D]
            class_text = average_embeddings(all_text)  # [C, D]
            snippet = torch.einsum("btd,cd->btc", video, class_text) / self.tau
        else:
            if description_ids.shape != (batch, steps):
                raise EdgeVadError(f"description_ids must be [B, T] = [{batch}, {steps}], "
                                   f"got {list(description_ids.shape)}")
            description_ids = description_ids.to(video.device).long()
            if self.text_table is not None:
                # Constant table: a plain gather per step (no data-dependent shapes; what an export does).
                text = self.text_table[:, description_ids]  # [C, B, T, D]
                snippet = torch.einsum("btd,cbtd->btc", video, text) / self.tau
                class_text = average_embeddings(self.text_table)
            else:
                # Encode each distinct description once; every step then picks its column.
                unique, inverse = torch.unique(description_ids, return_inverse=True)
                text = self.prompt(unique)  # [C, K', D]
                sims = torch.einsum("btd,ckd->btck", video, text)  # [B, T, C, K']
                index = inverse[:, :, None, None].expand(batch, steps, text.shape[0], 1)
                snippet = sims.gather(3, index).squeeze(3) / self.tau
                class_text = average_embeddings(text)
        video_logits = mil_topk_mean(snippet, lengths, self.mil_divisor)
        return FineOutput(snippet_logits=snippet, video_logits=video_logits, class_text=class_text)

    # ---- training --------------------------------------------------------------------------------------
    def video_parameters(self) -> list[nn.Parameter]:
        """theta_align of Exp. (17): the video branch."""
        return [*self.in_proj.parameters(), *self.rwkv.parameters(), *self.out_proj.parameters()]

    def prompt_parameters(self) -> list[nn.Parameter]:
        """theta_contrast of Exp. (18): the learnable prompt vectors."""
        return [p for p in self.prompt.parameters() if p.requires_grad]

    def loss(self, output: FineOutput, labels: Tensor) -> dict[str, Tensor]:
        """Exp. (17)-(19) from a forward output and video class labels [B] (indices into class_names)."""
        align = align_loss(output.video_logits, labels.to(output.video_logits.device).long(),
                           params=self.video_parameters())
        contrast = contrast_loss(output.class_text, normal_index=self.normal_index, params=self.prompt_parameters())
        return {"align": align, "contrast": contrast, "total": fine_total_loss(align, contrast)}

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, Any]:
        """The learned weights only (no frozen encoder): what a fine-stage checkpoint needs."""
        frozen = {f"prompt.text_encoder.{k}" for k in self.prompt.text_encoder.state_dict()}
        return {k: v for k, v in self.state_dict().items() if k not in frozen}

    def load_trainable_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of trainable_state_dict (strict about the learned weights)."""
        if state.get("text_table") is not None:
            self.text_table = torch.empty_like(state["text_table"])
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("prompt.text_encoder.")]
        if missing or unexpected:
            raise EdgeVadError(f"fine-stage checkpoint does not match the model: missing {missing}, "
                               f"unexpected {unexpected}")
