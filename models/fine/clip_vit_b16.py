"""CLIP ViT-B/16 as the fine stage's frozen encoders (paper Sec. IV-B), through open_clip, from LOCAL files only.

Checkpoint formats read (`build_clip`):
- "openai": the TorchScript archive OpenAI distributes (ViT-B-16.pt), or a plain state dict with OpenAI's key
  names. open_clip's ViT CLIP uses exactly OpenAI's key names; the architecture (widths, layers, patch, image
  size, context, vocabulary) is inferred from tensor shapes by open_clip's `build_model_from_openai_state_dict`,
  with QuickGELU as OpenAI trained it.
- "open_clip": a state dict as open_clip saves it (optionally under "state_dict", optionally with "module."
  prefixes), loaded by open_clip's `load_checkpoint` into a model built from an open_clip model config
  (`model_cfg`, or the built-in config `model_name`, "ViT-B-16" by default).
- "auto" (default): a TorchScript archive is "openai"; otherwise "open_clip" when `model_cfg` is given, else
  "openai". A LAION-trained open_clip checkpoint therefore needs `model_cfg` or checkpoint_format="open_clip"
  (its GELU differs from OpenAI's QuickGELU, which shapes cannot reveal).

Never downloads: `checkpoint` must be a path to an existing file. `checkpoint=None` with a `model_cfg` builds a
randomly initialised CLIP of that config (tests use a tiny one, `TINY_CLIP_CFG`).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_vad.constants import CLIP_CONTEXT_LENGTH, CLIP_MEAN, CLIP_STD
from edge_vad.errors import EdgeVadError
from edge_vad_models.fine.encoders import FineEncoders, ImageEncoder, ImagePreprocessing, TextEncoder

CheckpointFormat = Literal["auto", "openai", "open_clip"]

DEFAULT_MODEL_NAME = "ViT-B-16"  # open_clip's built-in config for CLIP ViT-B/16
CLIP_VOCAB_SIZE = 49408  # CLIP's BPE vocabulary (open_clip SimpleTokenizer, OpenAI CLIP)

# A tiny CLIP of the ViT-B/16 family for tests: same structure (ViT, patch 16, QuickGELU, context 77, CLIP's
# vocabulary), random weights. Heads = width // 64, as OpenAI checkpoints imply and open_clip's OpenAI loader infers.
TINY_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": CLIP_CONTEXT_LENGTH, "vocab_size": CLIP_VOCAB_SIZE, "width": 64, "heads": 1,
                 "layers": 2},
}

# Entries of OpenAI's TorchScript archives (and of scripted open_clip models) that are not weights.
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def import_open_clip():
    """open_clip, imported after the torchvision shim (PyPI torchvision fails beside this CPU torch otherwise)."""
    from edge_vad_models._torchvision_compat import import_torchvision

    import_torchvision()
    import open_clip

    return open_clip


def _missing(path: Path) -> EdgeVadError:
    return EdgeVadError(
        f"CLIP checkpoint not found: {path}; download ViT-B-16 weights elsewhere and pass --clip-checkpoint PATH"
    )


def _is_torchscript_archive(path: Path) -> bool:
    # torch.jit.save writes <archive>/constants.pkl and <archive>/code/; torch.save never does.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _load_openai(path: Path, scripted: bool) -> nn.Module:
    import_open_clip()
    from open_clip.factory import load_state_dict
    from open_clip.model import build_model_from_openai_state_dict

    if scripted:
        state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        state_dict = load_state_dict(str(path))  # unwraps "state_dict" and "module." like open_clip
    state_dict = {k: v for k, v in state_dict.items() if k not in _NON_WEIGHT_KEYS}
    if "visual.proj" not in state_dict:
        raise EdgeVadError(f"{path} is not a CLIP ViT checkpoint with OpenAI key names (no 'visual.proj'); "
                           "pass an OpenAI ViT-B-16 checkpoint, or an open_clip one with checkpoint_format='open_clip'")
    # open_clip infers the architecture from the shapes, but it casts weights to float16 before loading them
    # (OpenAI ships float16). Reloading the same state dict into the float32 model afterwards makes the result
    # exact for float32 checkpoints too (float16 -> float32 is lossless, so fp16 checkpoints are unaffected).
    model = build_model_from_openai_state_dict(dict(state_dict), quick_gelu=True, cast_dtype=None)
    model.float()
    model.load_state_dict(state_dict, strict=True)
    return model


def _clip_from_cfg(model_cfg: dict[str, Any]) -> nn.Module:
    open_clip = import_open_clip()
    cfg = dict(model_cfg)
    if cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {}):
        raise EdgeVadError("only CLIP models with open_clip's built-in text tower are supported "
                           "(a custom/HF text tower has no token-embedding entry point here)")
    return open_clip.CLIP(**cfg)


def _load_open_clip(path: Path, model_cfg: dict[str, Any] | None, model_name: str) -> nn.Module:
    open_clip = import_open_clip()
    if model_cfg is None:
        model_cfg = open_clip.get_model_config(model_name)
        if model_cfg is None:
            raise EdgeVadError(f"unknown open_clip model config {model_name!r}; pass model_cfg or e.g. 'ViT-B-16'")
    model = _clip_from_cfg(model_cfg)
    open_clip.load_checkpoint(model, str(path), strict=True)
    return model


def build_clip(checkpoint: Path | str | None, model_cfg: dict[str, Any] | None = None, *,
               checkpoint_format: CheckpointFormat = "auto", model_name: str = DEFAULT_MODEL_NAME) -> nn.Module:
    """An open_clip CLIP model in eval mode, float32, on the CPU, from a LOCAL checkpoint (see module doc).

    checkpoint None: a random CLIP of `model_cfg` (required then). A missing file is one EdgeVadError line.
    """
    if checkpoint is None:
        if model_cfg is None:
            raise EdgeVadError("build_clip needs a checkpoint path or a model_cfg for a random CLIP")
        return _clip_from_cfg(model_cfg).eval()
    path = Path(checkpoint)
    if not path.is_file():
        raise _missing(path)
    if checkpoint_format not in ("auto", "openai", "open_clip"):
        raise EdgeVadError(f"unknown CLIP checkpoint_format {checkpoint_format!r}; use auto, openai or open_clip")
    scripted = _is_torchscript_archive(path)
    fmt = checkpoint_format
    if fmt == "auto":
        fmt = "openai" if scripted or model_cfg is None else "open_clip"
    try:
        if fmt == "openai":
            model = _load_openai(path, scripted)
        else:
            model = _load_open_clip(path, model_cfg, model_name)
    except EdgeVadError:
        raise
    except (RuntimeError, KeyError, ValueError, OSError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeVadError(f"cannot load CLIP checkpoint {path} as {fmt} format ({first}); "
                           "check the file and --clip-checkpoint-format") from None
    return model.float().eval()


class ClipImageEncoder(ImageEncoder):
    """CLIP's vision tower: normalised pixels [N, 3, S, S] -> L2-normalised [N, embed_dim]."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.visual = clip.visual
        self.embed_dim = int(clip.text_projection.shape[1])
        size = clip.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.freeze()

    @property
    def preprocessing(self) -> ImagePreprocessing:
        return ImagePreprocessing(kind="pixels", image_size=self.image_size, mean=CLIP_MEAN, std=CLIP_STD,
                                  resize="bicubic")

    def encode(self, images: Tensor) -> Tensor:
        with torch.no_grad():  # frozen, and nothing upstream learns: no autograd graph
            return F.normalize(self.visual(images), dim=-1)


class ClipTextEncoder(TextEncoder):
    """CLIP's text tower entered at the token-embedding level (causal transformer, end-token pooling)."""

    pad_to_context = True

    def __init__(self, clip: nn.Module, tokenizer: Any | None = None):
        super().__init__()
        open_clip = import_open_clip()
        self.tokenizer = tokenizer if tokenizer is not None else open_clip.SimpleTokenizer(
            context_length=int(clip.positional_embedding.shape[0]))
        # The text tower's parts, held here so a FineStage does not drag the vision tower along.
        self.token_embedding_layer = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.width = int(clip.token_embedding.weight.shape[1])
        self.embed_dim = int(clip.text_projection.shape[1])
        self.context_length = int(clip.positional_embedding.shape[0])
        self.bos_id = int(self.tokenizer.sot_token_id)
        self.eos_id = int(self.tokenizer.eot_token_id)
        self.pad_id = 0  # CLIP pads with 0 after the end token
        self.freeze()

    def word_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def token_embedding(self, ids: Tensor) -> Tensor:
        return self.token_embedding_layer(ids)

    def encode_embeddings(self, token_embeds: Tensor, eot_positions: Tensor, normalize: bool = True) -> Tensor:
        length = token_embeds.shape[1]
        if length > self.context_length:
            raise EdgeVadError(f"CLIP text input has {length} tokens, more than its context of {self.context_length}")
        # The same operations as open_clip's CLIP.encode_text, from the word embeddings on.
        cast_dtype = self.transformer.get_cast_dtype()
        x = token_embeds.to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_positions]
        x = self.text_projection(x) if isinstance(self.text_projection, nn.Linear) else x @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x


def build_clip_encoders(checkpoint: Path | str | None = None, model_cfg: dict[str, Any] | None = None, *,
                        checkpoint_format: CheckpointFormat = "auto",
                        model_name: str = DEFAULT_MODEL_NAME) -> FineEncoders:
    """Registry entry "clip-vit-b16": frozen CLIP image and text encoders from one `build_clip` model."""
    clip = build_clip(checkpoint, model_cfg, checkpoint_format=checkpoint_format, model_name=model_name)
    return FineEncoders(name="clip-vit-b16", image=ClipImageEncoder(clip), text=ClipTextEncoder(clip))
