"""The fine stage's two frozen encoders, behind one small interface, and a registry by name.

- `ImageEncoder.encode(x) -> [N, D]`: per-frame image features. What `x` is (normalised pixels or features
  the coarse backbone already computed) is declared by `ImageEncoder.preprocessing`.
- `TextEncoder`: text -> [N, D], AND the same path entered at the token-embedding level
  (`token_embedding(ids)` -> edit rows -> `encode_embeddings(embeds, eot_positions)`), so the PromptLearner can
  put learnable vectors where word embeddings would be. `eot_positions[i]` is the index of the end token of
  sequence i; everything after it is padding (CLIP: ignored by the causal mask and the end-token pooling;
  BERT-style: masked out of attention and of the mean pooling).

Both encoders are frozen: parameters never require grad and `train()` keeps them in eval mode (no dropout),
so a FineStage can hold them as submodules and still call `.train()`. Gradients still flow THROUGH the text
encoder into the learnable prompt vectors.

Registry: `build_fine_encoders("clip-vit-b16" | "lite0-minilm", **opts)`; implementations import lazily so
choosing one never imports the other's libraries (open_clip / transformers).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from edge_vad.errors import EdgeVadError


@dataclass(frozen=True)
class ImagePreprocessing:
    """What an ImageEncoder expects as input.

    kind "pixels": float RGB [N, 3, size, size], (x / 255 - mean) / std, resized with `resize` then centre-cropped.
    kind "features": float [N, feature_dim] computed elsewhere (the coarse backbone on the device);
    mean / std / size then describe that backbone's own pixel input, for the record.
    """

    kind: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "bicubic"
    feature_dim: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("pixels", "features"):
            raise ValueError(f"ImagePreprocessing.kind must be 'pixels' or 'features', got {self.kind!r}")
        if self.kind == "features" and not self.feature_dim:
            raise ValueError("ImagePreprocessing of kind 'features' needs feature_dim")


class FrozenModule(nn.Module):
    """A module whose parameters never train: requires_grad False, and always in eval mode."""

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenModule:  # noqa: D102 - documented in the class
        # Frozen encoders keep eval behaviour (no dropout) even inside a model put in training mode.
        return super().train(False)


class ImageEncoder(FrozenModule, ABC):
    """Frozen per-frame image encoder: encode(x) -> [N, embed_dim]."""

    embed_dim: int

    @property
    @abstractmethod
    def preprocessing(self) -> ImagePreprocessing:
        """The input this encoder expects (see ImagePreprocessing)."""

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """[N, ...] inputs as `preprocessing` declares -> [N, embed_dim] features (no autograd: frozen)."""


class TextEncoder(FrozenModule, ABC):
    """Frozen text encoder, enterable at the token-embedding level.

    Attributes: embed_dim (output D), width (token-embedding width W), context_length (max tokens incl.
    start/end), bos_id / eos_id / pad_id (special token ids).
    """

    embed_dim: int
    width: int
    context_length: int
    bos_id: int
    eos_id: int
    pad_id: int
    # Pad every batch to context_length (CLIP's own tokenizer does; its encoder is then bit-identical to ours)
    # or only to the longest sequence (what sentence-transformers does for BERT-style encoders).
    pad_to_context: bool = False

    @abstractmethod
    def word_ids(self, text: str) -> list[int]:
        """Token ids of `text` WITHOUT start/end tokens and without truncation."""

    @abstractmethod
    def token_embedding(self, ids: Tensor) -> Tensor:
        """[N, L] token ids -> [N, L, width] word embeddings (the rows a prompt may replace)."""

    @abstractmethod
    def encode_embeddings(self, token_embeds: Tensor, eot_positions: Tensor, normalize: bool = True) -> Tensor:
        """[N, L, width] token embeddings, [N] end-token positions (L <= context_length) -> [N, embed_dim]."""

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """texts -> (ids [N, L] with start/end tokens, padded with pad_id; eot_positions [N]).

        Truncates to context_length keeping the end token, as CLIP's and BERT's own tokenizers do.
        L is context_length if `pad_to_context`, else the longest sequence here.
        """
        rows = []
        for text in texts:
            body = self.word_ids(text)[: self.context_length - 2]
            rows.append([self.bos_id, *body, self.eos_id])
        length = self.context_length if self.pad_to_context else max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        eot = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
        return ids, eot

    def encode(self, texts: Sequence[str], normalize: bool = True) -> Tensor:
        """texts -> [N, embed_dim] (L2-normalised unless normalize=False). Nothing learnable: no autograd."""
        if isinstance(texts, str):
            texts = [texts]
        ids, eot = self.tokenize(list(texts))
        device = self.device
        with torch.no_grad():
            return self.encode_embeddings(self.token_embedding(ids.to(device)), eot.to(device), normalize=normalize)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


@dataclass
class FineEncoders:
    """The pair a fine stage is built from, plus the registry name."""

    name: str
    image: ImageEncoder
    text: TextEncoder


# name -> "module:function" of a builder returning FineEncoders; imported only when asked for.
_REGISTRY: dict[str, str] = {
    "clip-vit-b16": "edge_vad_models.fine.clip_vit_b16:build_clip_encoders",
    "lite0-minilm": "edge_vad_models.fine.lite0_minilm:build_lite0_minilm_encoders",
}


def fine_encoder_names() -> list[str]:
    """Registered fine-stage encoder names."""
    return list(_REGISTRY)


def build_fine_encoders(name: str, **opts) -> FineEncoders:
    """Build the named image/text encoder pair; `opts` go to that implementation's builder."""
    if name not in _REGISTRY:
        raise EdgeVadError(f"unknown fine-stage encoders {name!r}; choose one of: {', '.join(_REGISTRY)}")
    module_name, func_name = _REGISTRY[name].split(":")
    builder: Callable[..., FineEncoders] = getattr(importlib.import_module(module_name), func_name)
    return builder(**opts)
