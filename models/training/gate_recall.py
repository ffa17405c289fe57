"""What the recipe's gate rule costs in missed events: per cross-validation fold, the fold's head with its
inner-CV gate (as models/training/default_cv.py fits them) over ALL its held-out fight-surv clips stitched in
stream order (normal and fight, 2 s each), and the share of fight clips during which the gate was open, at the
fitted on-threshold and at lower ones, beside the false events (confirmed events that start in a normal clip
after a normal clip).

The model card shows the table (models/default/gate_recall.json).

    python -m edge_vad_models.training.gate_recall --data ../shared/data --cache runs/cache/frames \\
        --out models/default/gate_recall.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from edge_vad.config import GateConfig
from edge_vad.runtime.gate import GateState, step
from edge_vad_models.training.cv_folds import stream_order
from edge_vad_models.training.default_cv import DESIGN, inner_gate
from edge_vad_models.training.default_data import DefaultData, fit_branch
from edge_vad_models.training.window_design import fit_window_head

log = logging.getLogger(__name__)

LOWER_ON = (0.95, 0.9, 0.85, 0.8)  # on-thresholds tried below the fitted one


def run_gate(scores: np.ndarray, clip_of: np.ndarray, labels: np.ndarray, fps: float, on: float, off: float) -> dict:
    """Event recall (fight clips with the gate open in them) and false events of one stitched stream."""
    cfg = GateConfig(on_threshold=on, off_threshold=min(off, on))
    state, open_in, false = GateState(), set(), 0
    for i, score in enumerate(scores):
        state, d = step(cfg, fps, state, float(score), i, i / fps)
        if d.open:
            open_in.add(int(clip_of[i]))
        if d.event == "start" and labels[clip_of[i]] == 0 and labels[clip_of[d.start_frame]] == 0:
            false += 1
    fights = np.flatnonzero(labels == 1)
    return {"recall": float(np.mean([k in open_in for k in fights])) if len(fights) else None, "false_events": false}


def fold_recall(data: DefaultData, fold) -> dict:
    branch = fit_branch(data.cache, [data.clips[c.name] for c in fold.train])
    fd = data.with_branch(branch, progress=False)
    train = fd.fold_train(fold)
    feats = {n: DESIGN.features(v) for n, v in fd.videos.items()}
    head = fit_window_head(DESIGN, train, feats)
    gate = inner_gate(train, fd.fps, feats)
    head.platt = tuple(gate["platt"])
    clips = stream_order(list(fold.fight))
    scores = np.concatenate([head(fd.videos[c.name]) for c in clips])
    clip_of = np.repeat(np.arange(len(clips)), [fd.videos[c.name].frames for c in clips])
    labels = np.array([c.label for c in clips])
    fps = float(np.median([fd.fps[c.name] for c in clips]))
    rows = {"fitted": {"on": gate["on_threshold"], **run_gate(scores, clip_of, labels, fps, gate["on_threshold"],
                                                              gate["off_threshold"])}}
    for on in LOWER_ON:
        rows[f"{on:.2f}"] = {"on": on, **run_gate(scores, clip_of, labels, fps, on, gate["off_threshold"])}
    return {"fold": fold.index, "minutes": len(scores) / fps / 60.0, "fight_clips": int(labels.sum()),
            "normal_clips": int((labels == 0).sum()), "rows": rows}


def main(argv=None) -> None:
    from edge_vad_models.features import write_json_atomic

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--cache", type=Path, default=Path("runs/cache/frames"))
    ap.add_argument("--out", type=Path, default=Path("models/default/gate_recall.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = DefaultData.load(args.data, args.cache, progress=False)
    folds = []
    for fold in data.folds:
        folds.append(fold_recall(data, fold))
        log.info("fold %d: %s", fold.index, folds[-1]["rows"])
    write_json_atomic(args.out, {"note": __doc__.split("\n\n")[0], "folds": folds})


if __name__ == "__main__":
    main()
