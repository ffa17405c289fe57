"""`edge-vad train ...` and `edge-vad features extract`: thin shells over edge_vad_models.
Everything torch-related is imported inside the functions (the runtime never loads torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from edge_vad.errors import MissingDependency

TRAIN_HINT = "pip install torch==2.13.0 && pip install 'edge-vad[train]'"


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
        import edge_vad_models  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"training needs PyTorch and the `train` extra ({exc}); install with: {TRAIN_HINT}") from None


def train_default(data: Path, out: Path, cache: Path, epochs: int, bo_evaluations: int, skip_fine: bool) -> dict:
    _require_torch()
    from edge_vad_models.training.default_recipe import train_default as run

    summary = run(data, out, cache, coarse_epochs=epochs, bo_evaluations=bo_evaluations, fine=not skip_fine)
    print(json.dumps(summary, indent=2))
    return summary


def features_extract(sources: list[Path], out: Path, kind: str, checkpoint: Optional[str]) -> dict:
    _require_torch()
    from edge_vad_models.backbones import AdjustMobileNet
    from edge_vad_models.checkpoint import load_coarse
    from edge_vad_models.features import extract_features

    branch_sha = None
    if kind == "fa":
        ckpt = load_coarse(checkpoint or "default")
        model = ckpt.backbone
        branch_sha = ckpt.sha256
    else:
        model = AdjustMobileNet().eval()
    report = extract_features(sources, out, model, kind=kind, branch_sha256=branch_sha)
    print(f"features: {len(report['done'])} written, {len(report['skipped'])} already there, "
          f"{len(report['failed'])} failed" + "".join(f"\n  failed: {n}: {why}" for n, why in report["failed"].items()))
    return report
