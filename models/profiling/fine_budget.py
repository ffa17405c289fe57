"""Parameters and GFLOPs per snippet pass of the fine stage, on the architecture with RANDOM weights.

A snippet pass is what the device runs for one snippet while the gate is open (edge_vad.runtime: with the
default config every one of the SNIPPET_FRAMES frames is sampled): the image encoder on each frame, then the
fine head (edge_vad_models.fine.FineStage: linear -> EnhancedRWKV -> linear -> cosine against the constant text
table) over those steps. The text encoder never runs on the device (the text side is a table), so it is not
counted; nor is the table itself (data: classes x descriptions x D constants).

Encoders:
- "clip-vit-b16" (paper-faithful): CLIP ViT-B/16 image tower (edge_vad_models.profiling.vit_tower: open_clip's,
  or its torch.nn twin where open_clip is absent) + a FineStage at FineStage's defaults (hidden 512, CLIP's
  512-d joint space, 40 prompt tokens).
- "lite0-minilm" (our offline default): the coarse EfficientNet-Lite0 trunk, whose pooled 1280-d output the
  fine head reads (the device computes it once per frame for the coarse stage anyway: `shared_with_coarse`) +
  a FineStage at the training recipe's sizes (FineTrainConfig) with all-MiniLM-L6-v2's 384-d text space.

Counting rule: edge_vad_models.profiling.counting.COUNTING_RULE (that of edge_vad_export.budgets). The image
encoder is built on the meta device (shapes only: nothing allocated, no weights needed).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from edge_vad.constants import IMAGE_SIZE, SNIPPET_FRAMES, XD_VIOLENCE_CLASSES
from edge_vad.errors import EdgeVadError
from edge_vad_models.profiling.counting import COUNTING_RULE, count_flops, count_params

WEIGHTS_LABEL = "random (architecture only)"
ENCODERS = ("clip-vit-b16", "lite0-minilm")
# all-MiniLM-L6-v2's shapes (embedding 384, token width 384, 256 tokens), as edge_vad.cli.models_cmd uses them:
# the head needs only the shapes, not the model.
MINILM_SHAPES = {"embed_dim": 384, "width": 384, "context_length": 256}


def _image_encoder(encoder: str, vit_impl: str) -> tuple[Callable[[], nn.Module], str, str]:
    """(builder of the image encoder, its name, implementation label)."""
    if encoder == "clip-vit-b16":
        from edge_vad_models.profiling.vit_tower import open_clip_available, vit_b16_image_tower

        impl = vit_impl if vit_impl != "auto" else ("open_clip" if open_clip_available()[0] else "torch")
        return (lambda: vit_b16_image_tower(impl)[0]), "CLIP ViT-B/16 image tower (224x224)", impl
    from edge_vad_models.backbones import DEFAULT_BACKBONE, get_backbone_spec

    spec = get_backbone_spec(DEFAULT_BACKBONE)
    return (lambda: spec.build(pretrained=False).trunk), f"{DEFAULT_BACKBONE} trunk (224x224, pooled)", "torch"


def _head(encoder: str, feature_dim: int) -> nn.Module:
    """A FineStage of the encoder's sizes, its text side a random constant table (as on the device)."""
    from edge_vad_models.fine.fine_stage import FineStage
    from edge_vad_models.training.fine import FineTrainConfig, TableOnlyTextEncoder

    if encoder == "clip-vit-b16":
        from edge_vad.constants import CLIP_CONTEXT_LENGTH

        text = TableOnlyTextEncoder(embed_dim=feature_dim, width=feature_dim, context_length=CLIP_CONTEXT_LENGTH)
        stage = FineStage(XD_VIOLENCE_CLASSES, text, [""], feature_dim=feature_dim)
    else:
        cfg = FineTrainConfig()
        stage = FineStage(XD_VIOLENCE_CLASSES, TableOnlyTextEncoder(**MINILM_SHAPES), [""], feature_dim=feature_dim,
                          hidden_dim=cfg.hidden_dim, n_ctx=cfg.n_ctx)
    stage.use_text_table(torch.randn(len(XD_VIOLENCE_CLASSES), 1, stage.prompt.text_encoder.embed_dim))
    return stage.eval()


def fine_stage_budget(encoder: str = "clip-vit-b16", frames_per_snippet: int = SNIPPET_FRAMES,
                      vit_impl: str = "auto") -> dict[str, Any]:
    """{encoder, weights, params, gflops (per snippet pass), gflops_per_frame, frames_per_snippet, counted_per,
    counting_rule, trainable_params, parts: {image_encoder, head}} (module doc)."""
    if encoder not in ENCODERS:
        raise EdgeVadError(f"unknown fine-stage encoder {encoder!r}; choose one of: {', '.join(ENCODERS)}")
    if frames_per_snippet < 1:
        raise EdgeVadError(f"frames_per_snippet must be >= 1, got {frames_per_snippet}")
    build, image_name, impl = _image_encoder(encoder, vit_impl)
    with torch.device("meta"):
        image = build().eval()
    pixels = torch.empty(1, 3, IMAGE_SIZE, IMAGE_SIZE, device="meta")
    image_flops = count_flops(lambda: image(pixels), image)  # per frame: linear in the batch
    with torch.no_grad():  # [1, D] from the ViT, [1, C, 7, 7] from the trunk (pooled to C): channels either way
        feature_dim = int(image(pixels).shape[1])
    head = _head(encoder, feature_dim)
    frames = torch.randn(1, frames_per_snippet, feature_dim)
    head_flops = count_flops(lambda: head(frames), head)
    head_params = sum(p.numel() for p in head.video_parameters())
    image_params = count_params(image)
    total_flops = image_flops * frames_per_snippet + head_flops
    lite = encoder == "lite0-minilm"
    return {
        "encoder": encoder,
        "weights": WEIGHTS_LABEL,
        "params": image_params + head_params,
        "gflops": round(total_flops / 1e9, 4),
        "gflops_per_frame": round(total_flops / frames_per_snippet / 1e9, 4),
        "frames_per_snippet": frames_per_snippet,
        "counted_per": (f"snippet pass: the image encoder on {frames_per_snippet} frames + the head over "
                        f"{frames_per_snippet} steps"),
        "counting_rule": COUNTING_RULE,
        "trainable_params": head.trainable_parameter_count(),
        "parts": {
            "image_encoder": {"name": image_name, "impl": impl, "params": image_params,
                              "gflops_per_frame": round(image_flops / 1e9, 4), "shared_with_coarse": lite},
            "head": {"name": "FineStage video branch (linear -> EnhancedRWKV -> linear) + cosine vs text table",
                     "params": head_params, "gflops_per_snippet": round(head_flops / 1e9, 6),
                     "feature_dim": feature_dim, "hidden_dim": head.rwkv.dim,
                     "text_dim": head.prompt.text_encoder.embed_dim, "classes": len(head.class_names)},
        },
        "gflops_beyond_coarse": round((head_flops if lite else total_flops) / 1e9, 4),
    }
