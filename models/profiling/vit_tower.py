"""The CLIP ViT-B/16 image tower for cost measurements: from open_clip when it imports, else in plain torch.nn.

`vit_b16_image_tower(impl="auto")` returns (module, impl): impl "open_clip" is open_clip's VisionTransformer as
edge_vad_models.fine.clip_vit_b16.build_clip builds it (random weights, OpenAI's QuickGELU); impl "torch" is
`TorchViTImageTower`, written for machines where open_clip cannot be installed (it needs torchvision, which a
bare CUDA PyTorch install lacks). The torch version keeps open_clip's module names, parameter shapes and order of
operations, so one's state dict loads into the other and the outputs agree (tests/profiling prove it on a small
config), and its parameters and FLOPs equal the real tower's. Weights are always random here: cost only.

ViT-B/16 (OpenAI CLIP; open_clip's "ViT-B-16" config): 224x224 input, 16x16 patches (196 + 1 class token),
width 768, 12 layers, 12 heads, MLP 4x, QuickGELU, pre-norm, class-token pooling, projection to 512.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from edge_vad.constants import CLIP_CONTEXT_LENGTH, CLIP_EMBED_DIM
from edge_vad.errors import EdgeVadError

VIT_B16 = {"image_size": 224, "patch_size": 16, "width": 768, "layers": 12, "output_dim": 512}  # OpenAI CLIP ViT-B/16
HEAD_WIDTH = 64  # attention head width: heads = width // 64, as OpenAI's checkpoints and open_clip's loader have it


class _LayerNorm(nn.LayerNorm):
    """LayerNorm that returns the input's dtype (open_clip's LayerNorm: under fp16 autocast it computes in fp32)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).to(x.dtype)


class _QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI trained CLIP with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (open_clip's ResidualAttentionBlock)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = _LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = _LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", _QuickGELU()),
                                              ("c_proj", nn.Linear(hidden, width))]))

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _Blocks(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.ModuleList(_Block(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class TorchViTImageTower(nn.Module):
    """CLIP's ViT image tower in torch.nn only: [N, 3, S, S] -> [N, output_dim] (not normalised, as open_clip's)."""

    def __init__(self, image_size: int = 224, patch_size: int = 16, width: int = 768, layers: int = 12,
                 heads: int | None = None, mlp_ratio: float = 4.0, output_dim: int = CLIP_EMBED_DIM):
        super().__init__()
        if image_size % patch_size:
            raise EdgeVadError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        heads = heads or max(1, width // HEAD_WIDTH)
        grid = image_size // patch_size
        scale = width ** -0.5
        self.image_size = (image_size, image_size)
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = _LayerNorm(width)
        self.transformer = _Blocks(width, layers, heads, mlp_ratio)
        self.ln_post = _LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)  # [N, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [N, grid^2, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj  # class-token pooling (LayerNorm is per token: order is free)


def open_clip_available() -> tuple[bool, str]:
    """(True, "") when open_clip imports (through the torchvision shim), else (False, why)."""
    try:
        from edge_vad_models.fine.clip_vit_b16 import import_open_clip

        import_open_clip()
    except Exception as exc:  # noqa: BLE001 - missing package, or torchvision failing to load: both mean "absent"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return False, f"{type(exc).__name__}: {first}"
    return True, ""


def vit_b16_image_tower(impl: str = "auto", config: dict[str, Any] | None = None) -> tuple[nn.Module, str]:
    """(CLIP ViT-B/16 image tower with random weights in eval mode, "open_clip" | "torch").

    impl "auto": open_clip when it imports, else torch. `config` overrides VIT_B16 (tests use a small one).
    Build under `with torch.device("meta"):` to count parameters and FLOPs without allocating anything.
    """
    if impl not in ("auto", "open_clip", "torch"):
        raise EdgeVadError(f"unknown ViT implementation {impl!r}; use auto, open_clip or torch")
    cfg = dict(VIT_B16, **(config or {}))
    if impl == "auto":
        impl = "open_clip" if open_clip_available()[0] else "torch"
    if impl == "torch":
        return TorchViTImageTower(**cfg).eval(), "torch"
    ok, why = open_clip_available()
    if not ok:
        raise EdgeVadError(f"open_clip does not import here ({why}); install open_clip_torch or use impl 'torch'")
    from edge_vad_models.fine.clip_vit_b16 import CLIP_VOCAB_SIZE, build_clip

    vision = {k: cfg[k] for k in ("image_size", "patch_size", "width", "layers")}
    # build_clip makes a whole CLIP; its text tower (kept minimal here) is dropped, only .visual is returned.
    text = {"context_length": CLIP_CONTEXT_LENGTH, "vocab_size": CLIP_VOCAB_SIZE, "width": 64, "heads": 1, "layers": 1}
    clip = build_clip(None, model_cfg={"embed_dim": cfg["output_dim"], "quick_gelu": True, "vision_cfg": vision,
                                       "text_cfg": text})
    return clip.visual.eval(), "open_clip"
