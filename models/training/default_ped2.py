"""UCSD Ped2 checks of the default recipe, per cross-validation fold (issue 15):

- scene calibration: the runtime's scene model (edge_vad.runtime.scene_calibration) fitted on the 16 normal
  training videos with the fold's head, then the held-out test videos' frame AUC with and without it; as the
  device would (`edge-vad calibrate` on the training videos, `edge-vad score --calibration` on the test ones),
  from the cached grey input frames and F_A maps;
- pointing game on the pixel masks (videos 01-05, 07, 08): the device's heatmap (edge_vad.runtime.heatmap),
  uncalibrated and calibrated, its peak on the mask (models/explain/pointing.py's rule, tolerance 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from edge_vad.runtime.heatmap import evidence_heatmap, grey_motion, map_change
from edge_vad.runtime.scene_calibration import GRID, Footage, SceneState, fit_scene_model, frame_features
from edge_vad_models.training.cv_eval import auc
from edge_vad_models.training.cv_folds import Fold
from edge_vad_models.training.default_data import DefaultData

MASKS = "ucsd-ped2/test_pixel_masks.npz"


def scene_observations(data: DefaultData, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(motion [T, R], appearance [T, R, C], F_A maps [T, C, h, w], grey [T, S, S]) of one cached video."""
    grey = np.asarray(data.cache.get(name, "grey224"))
    maps = data.branch.maps(data.cache.get(name, "trunk"))
    state, motion, appearance = SceneState(), [], []
    for g, a in zip(grey, maps):
        m, app, state = frame_features(g, a, state, GRID)
        motion.append(m)
        appearance.append(app)
    return np.stack(motion), np.stack(appearance), maps, grey


def _hit(heat: np.ndarray, mask: np.ndarray) -> bool:
    h = cv2.resize(np.asarray(heat, np.float32), (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_LINEAR)
    if not np.isfinite(h).all() or h.max() <= 0:
        return False
    return bool(mask[np.unravel_index(int(np.argmax(h)), h.shape)])


def ped2_fold(data: DefaultData, fold: Fold, head, data_root: Path) -> Optional[dict]:
    """Calibration and pointing figures of one fold's held-out Ped2 test videos (None without any)."""
    if not fold.ped2:
        return None
    from edge_vad_models.explain.pointing import load_masks

    footage = Footage()
    for clip in (c for c in fold.train if c.name.startswith("ped2_train_")):
        m, a, _, _ = scene_observations(data, clip.name)
        footage.add_stream(m, a, head.logits(data.videos[clip.name]))
    model = fit_scene_model(footage)
    masks_file = Path(data_root) / MASKS
    plain, calibrated, labels = [], [], []
    tally = {"uncalibrated": 0, "calibrated": 0, "frames": 0, "area_share": 0.0}
    for clip in fold.ped2:
        video = data.videos[clip.name]
        motion, appearance, maps, grey = scene_observations(data, clip.name)
        logits = head.logits(video)
        evidence = model.evidence(motion, appearance)
        plain.append(logits)
        calibrated.append(model.calibrated_logit(logits, evidence))
        labels.append(video.labels)
        try:
            masks = load_masks(masks_file, clip.name[-2:])
        except Exception:  # noqa: BLE001 - test video 06 has no masks
            continue
        for t in range(len(masks)):
            if not masks[t].any():
                continue
            fine = grey_motion(grey[t], grey[t - 1] if t else None)
            previous = maps[t - 1] if t else None
            tally["uncalibrated"] += _hit(evidence_heatmap(map_change(maps[t], previous), fine), masks[t])
            tally["calibrated"] += _hit(evidence_heatmap(evidence[t].reshape(GRID, GRID), fine), masks[t])
            tally["frames"] += 1
            tally["area_share"] += float(masks[t].mean())
    y = np.concatenate(labels)
    return {"videos": [c.name for c in fold.ped2], "frame_auc_without": auc(y, np.concatenate(plain)),
            "frame_auc_with": auc(y, np.concatenate(calibrated)), "pointing": tally,
            "scores": {c.name: (p, q) for c, p, q in zip(fold.ped2, plain, calibrated)}}


def summarise_ped2(per_fold: list, videos: dict) -> dict:
    folds = [f for f in per_fold if f is not None]
    names = [n for f in folds for n in f["scores"]]
    y = np.concatenate([videos[n].labels for n in names])
    plain = np.concatenate([f["scores"][n][0] for f in folds for n in f["scores"]])
    cal = np.concatenate([f["scores"][n][1] for f in folds for n in f["scores"]])
    frames = sum(f["pointing"]["frames"] for f in folds)
    hits = {k: sum(f["pointing"][k] for f in folds) for k in ("uncalibrated", "calibrated")}
    spread = lambda k: {"mean": float(np.mean([f[k] for f in folds])), "std": float(np.std([f[k] for f in folds])),  # noqa
                        "folds": [round(f[k], 4) for f in folds]}
    return {"calibration": {"frame_auc_without": spread("frame_auc_without"), "frame_auc_with": spread("frame_auc_with"),
                            "pooled_without": auc(y, plain), "pooled_with": auc(y, cal),
                            "protocol": "scene model fitted on Ped2 training videos 01-16 with each fold's head; "
                                        "frame AUC on the fold's held-out test videos"},
            "pointing": {"frames": frames, "uncalibrated": hits["uncalibrated"] / max(frames, 1),
                         "calibrated": hits["calibrated"] / max(frames, 1),
                         "chance": sum(f["pointing"]["area_share"] for f in folds) / max(frames, 1),
                         "rule": "argmax of the device's heatmap (bilinear to 240 x 360) on the pixel mask, "
                                 "tolerance 0, every masked frame of the held-out test videos"}}
