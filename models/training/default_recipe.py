"""Reproduce the shipped default models from the real data in ../shared/data (issue 15's recipe).

    edge-vad train default --data ../shared/data --out models/default

Steps (seeded; each shows progress):
1. the frame cache of every fight-surv clip and Ped2 video through the runtime's resize (models/training/frame_cache);
2. 5-fold cross-validation by source video (models/training/default_cv, default_ped2, cv_fine): per fold the
   F_A branch (PCA of the trunk), the window-statistics head, the AFED teacher, a distilled head, the issue's
   baselines, the gate on held-out normal streams, the Ped2 scene calibration and pointing game, the fine stage;
3. the shipped models fitted on ALL the data: branch, head (Platt-scaled and gate thresholds from the
   out-of-fold logits of step 2), the AFED teacher (reference, exported for bench / explain), the fine stage;
4. coarse.pt, fine.pt, text_table.npy, metrics.json and MODEL_CARD.md (models/training/model_card.py) in --out.
Only step 3 shapes the checkpoint (with step 2's out-of-fold logits); `report=False` skips what only reports.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from edge_vad.head_input import TRUNK_FA_MOTION
from edge_vad_models.training.cv_fine import FINE_CLASSES
from edge_vad_models.training.default_cv import DESIGN, DISTILL, FALSE_EVENTS_PER_HOUR, gate_from_oof, run_cv
from edge_vad_models.training.default_data import DefaultData, fit_branch

log = logging.getLogger(__name__)

TEACHER_EPOCHS = 20


def fine_config():
    from edge_vad_models.training.fine import FineTrainConfig

    # n_ctx 8 instead of the paper's 40 and at most 8 distinct descriptions per step: the live text encoder
    # dominates a CPU training step (8.7 s with 40 tokens, 3.1 s with 8, measured before issue 15).
    return FineTrainConfig(epochs=12, n_ctx=8, max_descriptions_per_step=8, batch_size=16)


def fine_features(v) -> np.ndarray:
    """The fine stage's per-frame input: the pooled trunk feature (the runtime's `trunk_feature`)."""
    return np.asarray(v.parts["pooled"], np.float32)


def fine_repeat(v) -> int:
    return 4 if v.name.startswith("ped2_") else 1  # Ped2's 24 videos against 240 clips (as before issue 15)


def imagenet_ids_of(videos: dict) -> dict:
    from edge_vad_models.training.cv_fine import imagenet_ids
    from edge_vad_models.backbones import AdjustMobileNet

    classifier = AdjustMobileNet().classifier.eval()
    return {n: imagenet_ids(v.parts["pooled"], classifier) for n, v in videos.items()}


def final_gate(per_fold: list, data: DefaultData) -> dict:
    """Platt scaling and gate thresholds of the shipped head, from the folds' out-of-fold logits."""
    logits = {k: v for f in per_fold for k, v in f["oof"]["logits"].items()}
    labels = np.concatenate([np.full(len(z), data.clips[k].label, np.int64) for k, z in logits.items()])
    streams = [f["oof"]["normal_stream"] for f in per_fold]
    gate = gate_from_oof(streams, np.concatenate(list(logits.values())), labels)
    return {**gate, "n_frames": int(sum(len(s.scores) for s in streams))}


def fit_final(data: DefaultData, gate: dict, teacher_epochs: int, progress: bool) -> tuple[dict, dict]:
    """Branch, head and teacher on ALL the data -> (coarse.pt state, what metrics.json records of them)."""
    from edge_vad_models.backbones import BRANCH_PROJECTION, AdjustMobileNet
    from edge_vad_models.checkpoint import coarse_state
    from edge_vad_models.coarse_heads import WindowStatsHead
    from edge_vad_models.training.window_design import fit_window_head
    from edge_vad_models.training.window_distill import fit_teacher

    branch = fit_branch(data.cache, list(data.clips.values()))
    full = data.with_branch(branch, progress=progress)
    videos = list(full.videos.values())
    head = fit_window_head(DESIGN, videos)
    head.platt = tuple(gate["platt"])
    in_dim = full.videos[videos[0].name].parts["head"].shape[1]
    student = WindowStatsHead(in_dim, DESIGN.window).load_fitted(
        *(torch.as_tensor(np.asarray(a, np.float32)) for a in head.export_weights()[:3]), head.export_weights()[3])
    teacher = fit_teacher(DESIGN, videos, epochs=teacher_epochs)
    backbone = AdjustMobileNet(branch_kind=BRANCH_PROJECTION)
    backbone.set_projection(branch.mean, branch.components)
    thresholds = {k: gate[k] for k in ("on_threshold", "off_threshold", "rule", "n_frames")}
    state = coarse_state(backbone, teacher.folded(), {"in_dim": in_dim, "dim": teacher.model.proj.out_features},
                         student, {"in_dim": in_dim, "window": DESIGN.window}, None,
                         extra={"head_input": TRUNK_FA_MOTION, "gate": thresholds})
    record = {"platt": list(gate["platt"]), "gate": gate, "head_features": int(head.model.coef_.shape[1]),
              "videos": len(videos), "frames": int(sum(v.frames for v in videos))}
    return state, {"final": record, "full": full}


def train_default(data_root: Path, out_dir: Path, cache_dir: Path, teacher_epochs: int = TEACHER_EPOCHS,
                  fine: bool = True, report: bool = True, progress: bool = True) -> dict:
    """All steps (module doc); returns the summary printed by `edge-vad train default`."""
    from edge_vad_models.checkpoint import COARSE_FILE, save_atomic
    from edge_vad_models.features import write_json_atomic
    from edge_vad_models.training.model_card import write_model_card

    torch.manual_seed(0)
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = DefaultData.load(Path(data_root), Path(cache_dir), progress=progress)
    seconds = {"frame_cache": time.time() - t0}
    t1 = time.time()
    cv, per_fold = run_cv(data, Path(data_root), progress=progress, report=report)
    seconds["cross_validation"] = time.time() - t1
    gate = final_gate(per_fold, data)
    t2 = time.time()
    state, final = fit_final(data, gate, teacher_epochs, progress)
    save_atomic(state, out_dir / COARSE_FILE)
    seconds["final_coarse"] = time.time() - t2
    metrics = {
        "design": {"head": "window-stats", "head_input": TRUNK_FA_MOTION, "window": DESIGN.window, "C": DESIGN.C,
                   "stats": list(dict(DESIGN.inputs)["head"]), "branch": "projection (PCA of trunk positions)",
                   "train_stride": DESIGN.train_stride, "ped2_share": DESIGN.ped2_share,
                   "distilled_variant": DISTILL, "gate_target_false_events_per_hour": FALSE_EVENTS_PER_HOUR},
        "cv": cv, "final": final["final"],
        "split": {"folds": [{"fight": [c.name for c in f.fight], "ped2": [c.name for c in f.ped2]} for f in data.folds]},
    }
    if fine:
        t3 = time.time()
        metrics["fine"] = fine_stage(data, final["full"], out_dir, report, progress)
        seconds["fine"] = time.time() - t3
    seconds["total"] = time.time() - t0
    metrics["seconds"] = seconds
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_model_card(out_dir)
    return {"cv": {k: {m: v[m]["mean"] for m in ("fight_clip_auc", "ped2_frame_auc", "stream_frame_auc")}
                   for k, v in cv.items() if isinstance(v, dict) and "fight_clip_auc" in v},
            "gate": cv["gate"], "seconds": seconds}


def fine_stage(data: DefaultData, full: DefaultData, out_dir: Path, report: bool, progress: bool) -> dict:
    """The fine stage cross-validated in the same folds (when reporting), then fitted on all videos and saved."""
    from edge_vad_models.fine.descriptions import DescriptionVocabulary
    from edge_vad_models.training.cv_fine import cv_fine, fine_bags
    from edge_vad_models.training.fine import save_fine, train_fine

    ids = imagenet_ids_of(full.videos)
    cfg = fine_config()
    out = {"config": cfg.to_json(), "classes": list(FINE_CLASSES)}
    if report:
        out["cv"] = cv_fine(full.folds, full.videos, fine_features, cfg, ids, fine_repeat, progress=False)
    train = [v for v in full.videos.values() for _ in range(fine_repeat(v))]
    result = train_fine(fine_bags(train, fine_features, ids), [], list(FINE_CLASSES),
                        DescriptionVocabulary.imagenet().texts, cfg, progress=progress)
    save_fine(result, cfg, out_dir)
    out["trainable_parameters"] = result.report.get("trainable_parameters")
    return out
