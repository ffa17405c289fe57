"""Frame descriptions: the third part of the triplet text input (paper Sec. IV-B, Fig. 3, "CLIP-native text").

A description VOCABULARY is a finite list of words (ImageNet class names by default); description id i is the
sentence `describe_labels([words[i]])`, e.g. "a photo of a suit". Finite on purpose: the text side becomes a
constant table [classes x descriptions] exported to the device, so a frame only has to pick an id.
For people, a frame's description also lists its top-k words ("a photo of a suit, a jersey").

Two makers, same output (`FrameDescriptions`):
- `ClipDescriber` (clip-vit-b16): zero-shot. Image features x text features of "a photo of a {word}." for every
  vocabulary word (computed once, a constant), highest cosine first.
- `Lite0Describer` (lite0-minilm): the coarse backbone's own ImageNet classifier, highest logits first
  (the same words, in the same order, as `edge_vad_models.imagenet.top_labels` for the full vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from edge_vad.errors import EdgeVadError
from edge_vad_models.fine.encoders import TextEncoder
from edge_vad_models.imagenet import IMAGENET_NUM_CLASSES, imagenet_class_names

DESCRIPTION_PREFIX = "a photo of a "  # CLIP's zero-shot prompt style (Radford et al. 2021), "a photo of a {}."
CLIP_ZERO_SHOT_TEMPLATE = "a photo of a {}."
DEFAULT_TOP_K = 2  # words per human-readable frame description


def describe_labels(words: Sequence[str]) -> str:
    """["suit", "jersey"] -> "a photo of a suit, a jersey" (the sentence form of a frame description)."""
    if not words:
        raise EdgeVadError("a frame description needs at least one word")
    return DESCRIPTION_PREFIX + ", a ".join(words)


@dataclass(frozen=True)
class DescriptionVocabulary:
    """The finite set of descriptions the text table is built over: description id i <-> words[i]."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.words:
            raise EdgeVadError("a description vocabulary needs at least one word")

    @classmethod
    def imagenet(cls) -> DescriptionVocabulary:
        return cls(tuple(imagenet_class_names()))

    @property
    def texts(self) -> list[str]:
        """The description sentence of every id, in id order (what the PromptLearner encodes)."""
        return [describe_labels([w]) for w in self.words]

    def __len__(self) -> int:
        return len(self.words)


@dataclass(frozen=True)
class FrameDescriptions:
    """Per frame: the description id (into the vocabulary), its score, and a human-readable top-k sentence."""

    ids: Tensor  # [N] long
    scores: Tensor  # [N, K] scores of the top-k words, best first
    texts: list[str]


def _top_k(scores: Tensor, words: Sequence[str], k: int) -> FrameDescriptions:
    if scores.dim() != 2 or scores.shape[1] != len(words):
        raise EdgeVadError(f"description scores must be [N, {len(words)}], got {list(scores.shape)}")
    k = min(k, len(words))
    # Stable descending order: ties keep the lower id first, as imagenet.top_labels does.
    order = torch.as_tensor(np.argsort(-scores.detach().cpu().double().numpy(), axis=1, kind="stable")[:, :k])
    texts = [describe_labels([words[i] for i in row.tolist()]) for row in order]
    top_scores = torch.gather(scores.detach().cpu(), 1, order)
    return FrameDescriptions(ids=order[:, 0].clone(), scores=top_scores, texts=texts)


class ClipDescriber:
    """CLIP-native frame text by zero-shot retrieval over a vocabulary (constant vocabulary embeddings)."""

    def __init__(self, text_encoder: TextEncoder, vocabulary: DescriptionVocabulary | None = None,
                 template: str = CLIP_ZERO_SHOT_TEMPLATE, k: int = DEFAULT_TOP_K, batch_size: int = 256):
        self.vocabulary = vocabulary or DescriptionVocabulary.imagenet()
        self.template = template
        self.k = k
        captions = [template.format(w) for w in self.vocabulary.words]
        chunks = [text_encoder.encode(captions[i:i + batch_size]) for i in range(0, len(captions), batch_size)]
        self.vocabulary_embeddings = torch.cat(chunks).cpu()  # [V, D], L2-normalised

    def describe(self, image_features: Tensor) -> FrameDescriptions:
        """[N, D] image features (any scale) -> FrameDescriptions by cosine similarity."""
        if image_features.dim() != 2 or image_features.shape[1] != self.vocabulary_embeddings.shape[1]:
            raise EdgeVadError(f"ClipDescriber expects image features [N, {self.vocabulary_embeddings.shape[1]}], "
                               f"got {list(image_features.shape)}")
        sims = F.normalize(image_features.detach().float().cpu(), dim=-1) @ self.vocabulary_embeddings.T
        return _top_k(sims, self.vocabulary.words, self.k)


class Lite0Describer:
    """Frame text from the coarse backbone's own ImageNet classifier (no extra network on the device).

    `class_indices` restricts the vocabulary to some ImageNet classes (description id i <-> class_indices[i]);
    None uses all 1000 in ImageNet order.
    """

    def __init__(self, class_indices: Sequence[int] | None = None, k: int = DEFAULT_TOP_K):
        names = imagenet_class_names()
        if class_indices is None:
            class_indices = range(IMAGENET_NUM_CLASSES)
        self.class_indices = [int(i) for i in class_indices]
        if not self.class_indices or not all(0 <= i < IMAGENET_NUM_CLASSES for i in self.class_indices):
            raise EdgeVadError(f"class_indices must be non-empty ImageNet indices in 0..{IMAGENET_NUM_CLASSES - 1}")
        self.vocabulary = DescriptionVocabulary(tuple(names[i] for i in self.class_indices))
        self.k = k

    def describe(self, imagenet_logits: Tensor) -> FrameDescriptions:
        """[N, 1000] ImageNet logits -> FrameDescriptions (ids index this describer's vocabulary)."""
        if imagenet_logits.dim() != 2 or imagenet_logits.shape[1] != IMAGENET_NUM_CLASSES:
            raise EdgeVadError(f"Lite0Describer expects ImageNet logits [N, {IMAGENET_NUM_CLASSES}], "
                               f"got {list(imagenet_logits.shape)}")
        subset = imagenet_logits.detach().float().cpu()[:, self.class_indices]
        return _top_k(subset, self.vocabulary.words, self.k)
