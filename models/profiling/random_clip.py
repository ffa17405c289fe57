"""A clip-vit-b16 checkpoint with RANDOM weights, to export and RUN the paper-faithful cascade for latency only.

CLIP weights cannot be downloaded here (DESIGN.md), but a cascade's cost does not depend on weight values:
a randomly initialised CLIP ViT-B/16 of open_clip's own config runs exactly the operations of the trained one.
`write_random_clip_checkpoint(folder)` writes what `edge-vad export --fine-encoder clip-vit-b16` reads:
- coarse.pt: the shipped default coarse checkpoint (real Lite0 + QACM), so the coarse stage is the deployed one;
- fine.pt: a fine head (FineStage over CLIP embeddings, RWKV width FINE_HIDDEN_DIM) with random weights and a
  random text table (the export's constant: its size, not its values, costs time);
- clip_random.pt: the random CLIP state dict (open_clip config `clip_cfg`, ViT-B-16 by default; tests pass a
  tiny one), returned for --clip-checkpoint.
Everything made from it is labelled random: its scores and AUC mean nothing.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch

from edge_vad.constants import CLIP_CONTEXT_LENGTH, FINE_HIDDEN_DIM, XD_VIOLENCE_CLASSES
from edge_vad_models.checkpoint import default_checkpoint_dir
from edge_vad_models.fine.clip_vit_b16 import DEFAULT_MODEL_NAME, build_clip, import_open_clip

CLIP_WEIGHTS_FILE = "clip_random.pt"
COARSE_FILE = "coarse.pt"
DESCRIPTIONS = 16  # random description rows of the text table (the trained default has a few dozen)
PROMPT_TOKENS = 4
IMAGENET_CLASSES = 1000


def vit_b16_config() -> dict[str, Any]:
    """open_clip's ViT-B-16 config with QuickGELU, as OpenAI trained it (build_clip's openai reading)."""
    return dict(import_open_clip().get_model_config(DEFAULT_MODEL_NAME), quick_gelu=True)


def write_random_clip_checkpoint(folder: str | Path, clip_cfg: dict[str, Any] | None = None, seed: int = 0,
                                 hidden_dim: int = FINE_HIDDEN_DIM) -> Path:
    """Write coarse.pt, fine.pt and the random CLIP weights into `folder`; returns the CLIP weights' path."""
    from edge_vad_models.fine.fine_stage import FineStage
    from edge_vad_models.fine.prompt import TextTable, average_embeddings
    from edge_vad_models.training.fine import FineTrainConfig, FineTrainResult, TableOnlyTextEncoder, save_fine

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(default_checkpoint_dir() / COARSE_FILE, out / COARSE_FILE)
    cfg = copy.deepcopy(clip_cfg) if clip_cfg is not None else vit_b16_config()
    embed = int(cfg["embed_dim"])
    torch.manual_seed(seed)
    weights = out / CLIP_WEIGHTS_FILE
    torch.save(build_clip(None, model_cfg=cfg).state_dict(), weights)
    descriptions = [f"random description {i}" for i in range(DESCRIPTIONS)] + [""]  # the last: generic fallback
    stage = FineStage(XD_VIOLENCE_CLASSES, TableOnlyTextEncoder(embed, embed, CLIP_CONTEXT_LENGTH), descriptions,
                      feature_dim=embed, hidden_dim=hidden_dim, n_ctx=PROMPT_TOKENS)
    stage.use_text_table(torch.randn(len(XD_VIOLENCE_CLASSES), len(descriptions), embed))
    rows = [i % DESCRIPTIONS for i in range(IMAGENET_CLASSES)]
    table = TextTable(table=stage.text_table.numpy(), mean=average_embeddings(stage.text_table).numpy(),
                      class_names=stage.class_names, descriptions=tuple(descriptions))
    save_fine(FineTrainResult(model=stage.eval(), table=table, descriptions=descriptions, description_rows=rows,
                              fallback_row=DESCRIPTIONS),
              FineTrainConfig(encoder="clip-vit-b16", hidden_dim=hidden_dim, n_ctx=PROMPT_TOKENS), out)
    return weights
