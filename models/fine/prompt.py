"""PromptLearner: the paper's triplet text input (Sec. IV-B), built at the token-embedding level.

Per (class c, description k) the frozen text encoder reads

    [start] [ctx_1 .. ctx_l] [label tokens of c] [description tokens of k] [end] [pad ...]

where ctx are l learnable vectors (l = PROMPT_CONTEXT_TOKENS = 40 in the paper; shared by all classes, or one
set per class), in place of word embeddings. The total length with start/end never exceeds the encoder's
context (77 for CLIP): description tokens are cut first, then label tokens; if the learnable tokens alone do not
fit, construction fails with a clear message.

The token ids of every (class, description) pair are laid out once at construction; a forward pass only gathers
the requested descriptions, swaps in the context vectors and runs the encoder (gradients reach the context
vectors through the frozen encoder).

`export_text_table()` evaluates all pairs once: a constant [C, K, D] table (and its description average [C, D])
that the device uses instead of any text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_vad.constants import PROMPT_CONTEXT_TOKENS
from edge_vad.errors import EdgeVadError
from edge_vad_models.fine.encoders import TextEncoder

CTX_INIT_STD = 0.02  # context vectors start as N(0, 0.02^2), as in CoOp (Zhou et al., ref. [17] of the paper)


@dataclass(frozen=True)
class TextTable:
    """The frozen text side: L2-normalised class x description embeddings and their per-class average."""

    table: np.ndarray  # [C, K, D] float32
    mean: np.ndarray  # [C, D] float32, L2-normalised mean over descriptions
    class_names: tuple[str, ...]
    descriptions: tuple[str, ...]


def average_embeddings(embeds: Tensor) -> Tensor:
    """[C, K, D] -> [C, D]: mean over descriptions of the normalised embeddings, normalised again."""
    return F.normalize(F.normalize(embeds, dim=-1).mean(dim=1), dim=-1)


class PromptLearner(nn.Module):
    """Learnable context + class label + frame description -> frozen text encoder -> [C, K, D]."""

    def __init__(self, text_encoder: TextEncoder, class_names: Sequence[str], descriptions: Sequence[str],
                 n_ctx: int = PROMPT_CONTEXT_TOKENS, class_specific: bool = False, init_std: float = CTX_INIT_STD):
        super().__init__()
        if not class_names:
            raise EdgeVadError("PromptLearner needs at least one class name")
        if not descriptions:
            raise EdgeVadError("PromptLearner needs at least one description (use [''] for none)")
        if n_ctx < 0:
            raise EdgeVadError(f"the number of learnable context tokens must be >= 0, got {n_ctx}")
        context = text_encoder.context_length
        if n_ctx + 2 > context:
            raise EdgeVadError(f"{n_ctx} learnable prompt tokens plus start/end tokens ({n_ctx + 2}) exceed the text "
                               f"encoder's context of {context} tokens; use at most {context - 2} context tokens")
        self.text_encoder = text_encoder
        self.class_names = tuple(class_names)
        self.descriptions = tuple(descriptions)
        self.n_ctx = n_ctx
        self.class_specific = class_specific
        if n_ctx:
            shape = (len(class_names), n_ctx, text_encoder.width) if class_specific else (n_ctx, text_encoder.width)
            self.ctx = nn.Parameter(torch.randn(shape) * init_std)
        else:
            self.register_parameter("ctx", None)
        ids, eot, truncated = self._layout(text_encoder, context)
        self.truncated_pairs = truncated  # how many (class, description) pairs lost tokens to the length limit
        # Derived from the texts at construction: not part of the state dict.
        self.register_buffer("token_ids", ids, persistent=False)  # [C, K, L]
        self.register_buffer("eot_positions", eot, persistent=False)  # [C, K]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_descriptions(self) -> int:
        return len(self.descriptions)

    def _layout(self, enc: TextEncoder, context: int) -> tuple[Tensor, Tensor, int]:
        budget = context - 2 - self.n_ctx  # tokens left for label + description
        labels = [enc.word_ids(name) for name in self.class_names]
        descs = [enc.word_ids(text) if text else [] for text in self.descriptions]
        rows, truncated = [], 0
        for label in labels:
            for desc in descs:
                lab = label[:budget]
                dsc = desc[: budget - len(lab)]
                truncated += (len(lab) < len(label)) or (len(dsc) < len(desc))
                # The context slots hold pad ids: their embeddings are replaced by the learnable vectors.
                rows.append([enc.bos_id] + [enc.pad_id] * self.n_ctx + lab + dsc + [enc.eos_id])
        length = max(len(r) for r in rows)
        assert length <= context  # guaranteed by the budget above
        ids = torch.full((len(rows), length), enc.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        eot = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
        shape = (len(labels), len(descs))
        return ids.view(*shape, length), eot.view(shape), truncated

    def forward(self, description_ids: Tensor | None = None) -> Tensor:
        """Text embeddings [C, K', D] (L2-normalised) for the given description ids [K'] (all K if None)."""
        if description_ids is None:
            description_ids = torch.arange(self.num_descriptions, device=self.token_ids.device)
        description_ids = description_ids.to(self.token_ids.device).long().flatten()
        if description_ids.numel() and (description_ids.min() < 0 or description_ids.max() >= self.num_descriptions):
            raise EdgeVadError(f"description ids must be in 0..{self.num_descriptions - 1}")
        ids = self.token_ids[:, description_ids]  # [C, K', L]
        eot = self.eot_positions[:, description_ids]  # [C, K']
        n_cls, n_desc = eot.shape
        length = int(eot.max()) + 1  # later columns are padding for every selected pair
        ids = ids[..., :length].reshape(n_cls * n_desc, length)
        embeds = self.text_encoder.token_embedding(ids)
        if self.ctx is not None:
            if self.class_specific:
                ctx = self.ctx[:, None].expand(n_cls, n_desc, self.n_ctx, -1).reshape(n_cls * n_desc, self.n_ctx, -1)
            else:
                ctx = self.ctx[None].expand(n_cls * n_desc, -1, -1)
            embeds = torch.cat([embeds[:, :1], ctx.to(embeds.dtype), embeds[:, 1 + self.n_ctx:]], dim=1)
        out = self.text_encoder.encode_embeddings(embeds, eot.reshape(-1), normalize=True)
        return out.view(n_cls, n_desc, -1)

    def class_embeddings(self, description_ids: Tensor | None = None) -> Tensor:
        """[C, D]: per class, the normalised mean over the given descriptions (all if None)."""
        return average_embeddings(self(description_ids))

    @torch.no_grad()
    def export_text_table(self, batch_size: int = 64) -> TextTable:
        """Evaluate every (class, description) pair once: the constant text side for the device."""
        chunks = []
        for start in range(0, self.num_descriptions, batch_size):
            ids = torch.arange(start, min(start + batch_size, self.num_descriptions), device=self.token_ids.device)
            chunks.append(self(ids).float().cpu())
        table = torch.cat(chunks, dim=1)
        return TextTable(table=table.numpy().astype(np.float32), mean=average_embeddings(table).numpy(),
                         class_names=self.class_names, descriptions=self.descriptions)
