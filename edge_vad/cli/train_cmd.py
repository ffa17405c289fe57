"""`edge-vad train ...` and `edge-vad features extract`: thin shells over edge_vad_models.
Everything torch-related is imported inside the functions (the runtime never loads torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

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


def features_extract(sources: List[Path], out: Path, kind: str, checkpoint: Optional[str]) -> dict:
    _require_torch()
    from edge_vad_models.backbones import AdjustMobileNet
    from edge_vad_models.checkpoint import load_coarse
    from edge_vad_models.features import extract_features

    branch_sha = None
    if kind == "fa":
        ckpt = load_coarse(checkpoint or "default")
        model = ckpt.require_backbone("`--feature fa`")
        branch_sha = ckpt.sha256
    else:
        model = AdjustMobileNet().eval()
    report = extract_features(sources, out, model, kind=kind, branch_sha256=branch_sha)
    print(f"features: {len(report['done'])} written, {len(report['skipped'])} already there, "
          f"{len(report['failed'])} failed" + "".join(f"\n  failed: {n}: {why}" for n, why in report["failed"].items()))
    return report


# ---- feature lists (edge_vad_models.training.list_recipe) ---------------------------------------------------

def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def train_coarse_list(train_list: Path, val_list: Optional[Path], features_root: Optional[Path], out: Path,
                      epochs: int, dim: int, lr: float, batch_size: int, max_frames: int, dropout: float,
                      seed: int, progress: bool = True) -> dict:
    """`edge-vad train coarse --list`: the AFED teacher from a feature list."""
    _require_torch()
    from edge_vad_models.training.coarse import CoarseTrainConfig
    from edge_vad_models.training.list_recipe import train_coarse_on_list

    cfg = CoarseTrainConfig(dim=dim, epochs=epochs, lr=lr, batch_size=batch_size, max_frames=max_frames,
                            dropout=dropout, seed=seed)
    m = train_coarse_on_list(train_list, out, val_list, features_root, cfg, progress=progress)
    print(f"coarse: teacher trained on {m['n_train']} bags ({m['feature_dim']}-d features) in {m['seconds']:.1f} s")
    if m["n_val"]:
        print(f"coarse: validation video AUC {_fmt(m['val_video_auc'])} on {m['n_val']} videos "
              f"(clip score = mean of the top-k frame probabilities)")
    print(f"wrote {out / 'coarse.pt'} and {out / 'metrics.json'}; next: edge-vad train distill --checkpoint {out} "
          f"--list {train_list}")
    return m


def train_distill_list(checkpoint: str, train_list: Path, val_list: Optional[Path], features_root: Optional[Path],
                       bo_evaluations: int, epochs: int, window: int, hidden: int, lam: float, seed: int,
                       progress: bool = True) -> dict:
    """`edge-vad train distill --list`: the QACM student from the checkpoint's teacher."""
    _require_torch()
    from edge_vad_models.training.distill import DistillConfig
    from edge_vad_models.training.list_recipe import distill_on_list

    cfg = DistillConfig(window=window, hidden=hidden, epochs=epochs, lam=lam, seed=seed)
    m = distill_on_list(checkpoint, train_list, val_list, features_root, cfg, n_total=bo_evaluations,
                        progress=progress)
    print(f"distill: temperature T = {m['chosen_temperature']:.3f} chosen by {bo_evaluations} Bayesian-optimisation "
          f"evaluations (held-out KL to the teacher {m['bo_holdout']['fidelity_kl']:.4g}) in {m['seconds']:.1f} s")
    if m["n_val"]:
        print(f"distill: validation video AUC student {_fmt(m['val_video_auc'])}, teacher "
              f"{_fmt(m['val_teacher_video_auc'])} on {m['n_val']} videos")
    print(f"updated {Path(checkpoint) / 'coarse.pt'}; wrote distill_bo.json, distill_bo.png and metrics.json there")
    return m


def train_fine_list(checkpoint: str, train_list: Path, val_list: Optional[Path], features_root: Optional[Path],
                    classes: Optional[str], fine_encoder: str, clip_checkpoint: Optional[Path], epochs: int,
                    n_ctx: int, hidden: int, lr: float, batch_size: int, max_frames: int, seed: int,
                    progress: bool = True) -> dict:
    """`edge-vad train fine --list`: the fine stage from a feature list (generic description for every frame)."""
    _require_torch()
    from edge_vad_models.training.fine import FineTrainConfig
    from edge_vad_models.training.list_recipe import train_fine_on_list

    # generic_prob 0: every frame already uses the generic description, so description dropout changes nothing.
    cfg = FineTrainConfig(encoder=fine_encoder, hidden_dim=hidden, n_ctx=n_ctx, epochs=epochs, lr=lr,
                          batch_size=batch_size, max_frames=max_frames, seed=seed, generic_prob=0.0)
    m = train_fine_on_list(checkpoint, train_list, val_list, features_root, classes, cfg, clip_checkpoint,
                           progress=progress)
    print(f"fine: classes {', '.join(m['classes'])}; trained on {m['n_train']} videos in {m['seconds']:.1f} s")
    if m["n_val"]:
        print(f"fine: validation accuracy {_fmt(m['accuracy'])} on {m['n_val']} videos; per class: "
              + ", ".join(f"{c} {_fmt(a)}" for c, a in m["per_class_accuracy"].items()))
    print(f"wrote fine.pt, text_table.npy and metrics.json in {checkpoint}")
    return m
