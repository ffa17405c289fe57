"""Probe (issue 15): do optical-flow statistics add to Lite0's window statistics on the fight-surv clips?

    python -m edge_vad_models.training.flow_probe --data ../shared/data --features runs/cache/probe \
        --out models/default/flow_probe.json      (after backbone_probe, whose Lite0 features it reads; ~2 min)

The same frames and folds as edge_vad_models.training.backbone_probe (every second frame, the recipe's grouped
fight folds). Per clip, from OpenCV's Farneback flow between consecutive kept frames at 160 pixels wide:
per frame pair the flow magnitude's mean, spread, 90th and 99th percentiles, the share of pixels moving more
than 1 and 3 pixels, the magnitude-weighted spread of directions, and, as in "violent flows" (Hassner et al.,
2012), how much the magnitude changed since the previous pair (mean, 90th percentile) and the share of pixels
whose change exceeds the frame's mean change in each cell of a 4 x 4 grid (sorted, so the place does not
matter); the clip feature is the mean, spread and maximum of these over the clip (75 numbers). Scored alone,
and appended to Lite0's window statistics (repeated 10 times, FLOW_WEIGHT, so that 75 columns are not drowned
by 5120 under one L2 penalty). Clip AUC and the oracle two-class accuracy as in backbone_probe.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, Sequence

import cv2
import numpy as np

from edge_vad.datasets import Clip
from edge_vad_models.features import iter_frames
from edge_vad_models.training.backbone_probe import (FRAME_STEP, cached_per_clip, clip_features, clip_window_stats,
                                                     fight_clips_and_folds, fold_auc)

log = logging.getLogger(__name__)

FLOW_WIDTH = 160  # flow is computed on frames shrunk to this width (aspect kept)
GRID = 4  # violent-flows cells per side
FLOW_WEIGHT = 10  # repeats of the flow columns beside the 5120 appearance columns
FLOW_C = (0.01, 0.1, 1.0)
JOINT_C = (0.001, 0.003, 0.01)


def _small_grey(frame: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    height = max(GRID, round(grey.shape[0] * FLOW_WIDTH / grey.shape[1]))
    return cv2.resize(grey, (FLOW_WIDTH, height), interpolation=cv2.INTER_AREA)


def pair_stats(prev: np.ndarray, cur: np.ndarray, prev_mag) -> tuple:
    """(statistics of one frame pair's flow, its magnitude map) - see the module doc for the list."""
    flow = cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1])
    resultant = np.hypot((mag * np.cos(ang)).sum(), (mag * np.sin(ang)).sum())
    row = [mag.mean(), mag.std(), np.percentile(mag, 90), np.percentile(mag, 99), (mag > 1).mean(), (mag > 3).mean(),
           1.0 - resultant / (mag.sum() + 1e-6)]
    if prev_mag is None:
        row += [0.0] * (2 + GRID * GRID)
    else:
        change = np.abs(mag - prev_mag)
        above = (change > change.mean()).astype(np.float32)
        h, w = (above.shape[0] // GRID) * GRID, (above.shape[1] // GRID) * GRID
        cells = above[:h, :w].reshape(GRID, h // GRID, GRID, w // GRID).mean(axis=(1, 3)).ravel()
        row += [change.mean(), np.percentile(change, 90), *np.sort(cells)]
    return row, mag


def flow_clip_feature(frames: Sequence[np.ndarray]) -> np.ndarray:
    """[75] = mean, std and max over the clip of the per-pair statistics (the first pair has no change yet)."""
    greys = [_small_grey(f) for f in frames]
    rows, mag = [], None
    for prev, cur in zip(greys, greys[1:]):
        row, mag = pair_stats(prev, cur, mag)
        rows.append(row)
    if not rows:
        rows = [[0.0] * (9 + GRID * GRID)]
    x = np.asarray(rows[1:] if len(rows) > 1 else rows, np.float64)
    return np.concatenate([x.mean(axis=0), x.std(axis=0), x.max(axis=0)]).astype(np.float32)


def flow_features(clips: Sequence[Clip], folder: Path) -> Dict[str, np.ndarray]:
    return cached_per_clip(clips, folder / "flow",
                           lambda clip: flow_clip_feature(list(iter_frames(clip.path))[::FRAME_STEP]), "flow")


def probe(data: Path, features: Path) -> dict:
    clips, fold, y = fight_clips_and_folds(data)
    flow = flow_features(clips, features)
    lite0 = clip_features("efficientnet-lite0", clips, features)
    xf = np.stack([flow[c.name] for c in clips])
    xw = np.stack([clip_window_stats(lite0[c.name]) for c in clips])
    joint = np.concatenate([xw, np.repeat(xf, FLOW_WEIGHT, axis=1)], axis=1)
    return {"protocol": __doc__[__doc__.index("The same frames"):].strip(), "clips": len(clips),
            "flow_only": {f"C{c:g}": fold_auc(xf, y, fold, c) for c in FLOW_C},
            "lite0_window_stats": {f"C{c:g}": fold_auc(xw, y, fold, c) for c in JOINT_C},
            "lite0_window_stats_plus_flow": {f"C{c:g}": fold_auc(joint, y, fold, c) for c in JOINT_C}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--features", type=Path, default=Path("runs/cache/probe"))
    ap.add_argument("--out", type=Path, default=Path("models/default/flow_probe.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cv2.setNumThreads(1)
    result = probe(args.data, args.features)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "protocol"}, indent=1))


if __name__ == "__main__":
    main()
