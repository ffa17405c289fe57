"""`edge-vad eval`: grade a scores .npz against a benchmark's ground truth.

Length rule: scores are expanded to frames (each snippet score repeated N times with
`--snippet N`). A video's ground truth and expanded scores must then agree to within N - 1
frames (exactly with N = 1); both are cut to the shorter, which is the field's "ground truth
truncated to N x number of snippets" (and tolerates extractors that pad the last snippet).
Formats without video lengths are sized from the expanded scores (see edge_vad.eval.ground_truth).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edge_vad.errors import EdgeVadError
from edge_vad.eval.ground_truth import load_ground_truth
from edge_vad.eval.metrics import FRAME_METRIC_KEYS, detection_map, frame_metrics
from edge_vad.eval.scores_io import load_scores, match_videos
from edge_vad.fileio import write_json_atomic

log = logging.getLogger("edge_vad.eval")
_SHOWN_NAMES = 5  # names listed in a warning line before "+k more"


def aligned_length(video: str, gt_frames: int, score_frames: int, snippet: int) -> int:
    """Frames to evaluate for one video, or EdgeVadError when the lengths disagree beyond the rule."""
    if abs(gt_frames - score_frames) >= max(1, snippet):
        hint = "pass --snippet 16 if the scores are per 16-frame snippet" if snippet == 1 else "check --snippet and that the scores belong to this video"
        raise EdgeVadError(
            f"video {video!r}: ground truth has {gt_frames} frames but the scores cover {score_frames} "
            f"(--snippet {snippet}); {hint}"
        )
    return min(gt_frames, score_frames)


def _warn_unmatched(names: Sequence[str], what: str) -> None:
    if names:
        shown = ", ".join(names[:_SHOWN_NAMES]) + (f" (+{len(names) - _SHOWN_NAMES} more)" if len(names) > _SHOWN_NAMES else "")
        log.warning("%d %s, left out: %s", len(names), what, shown)


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def _print_table(metrics: Dict[str, object], counts: Dict[str, int], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=(
        f"{counts['videos']} videos ({counts['anomalous']} with anomalies, {counts['normal']} normal), "
        f"{counts['frames']:,} frames; values in %"
    ))
    table.add_column("metric")
    table.add_column("value", justify="right")
    labels = {
        "ap": "AP (average_precision_score)",
        "ap_pr_auc": "AP as PR-curve AUC (trapezoids)",
        "auc": "AUC (all frames)",
        "ano_auc": "Ano-AUC (anomalous videos)",
        "far": "FAR (normal frames >= 0.5)",
    }
    for key in FRAME_METRIC_KEYS:
        table.add_row(labels[key], _pct(metrics[key]))  # type: ignore[arg-type]
    if "map" in metrics:
        for t, value in metrics["map"].items():  # type: ignore[union-attr]
            table.add_row(f"mAP@IoU {t}", _pct(value))
        table.add_row("mAP AVG", _pct(metrics["map_avg"]))  # type: ignore[arg-type]
    Console().print(table)


def run_eval(gt: Path, scores: Path, snippet: int = 1, json_out: Optional[Path] = None) -> Dict[str, object]:
    """Grade `scores` against `gt`, print a table, optionally write JSON; returns the JSON's dict.

    Keys: ap, ap_pr_auc, auc, ano_auc, far (None where undefined), plus map ({"0.1": ...}) and
    map_avg when the scores carry class scores. Bad input raises EdgeVadError.
    """
    gt, scores = Path(gt), Path(scores)
    score_set = load_scores(scores, snippet)
    truth = load_ground_truth(gt, lengths={v: len(a) for v, a in score_set.scores.items()})
    pairs, gt_only, scores_only = match_videos(truth.videos, score_set.scores)
    _warn_unmatched(gt_only, f"videos in the ground truth ({gt.name}) have no scores")
    _warn_unmatched(scores_only, f"videos in the scores ({scores.name}) are not in the ground truth")
    if not pairs:
        raise EdgeVadError(
            f"no video of {scores} is in the ground truth {gt} (e.g. {next(iter(score_set.scores))!r} vs "
            f"{truth.videos[0] if truth.videos else 'nothing'!r}); check that both are for the same test set"
        )

    masks: Dict[str, np.ndarray] = {}
    frame_scores: Dict[str, np.ndarray] = {}
    lengths: Dict[str, int] = {}
    for g, s in pairs:
        n = aligned_length(g, len(truth.masks[g]), len(score_set.scores[s]), snippet)
        masks[g], frame_scores[g], lengths[g] = truth.masks[g][:n], score_set.scores[s][:n], n
    metrics: Dict[str, object] = dict(frame_metrics(masks, frame_scores))

    if score_set.class_scores:
        lacking: List[str] = [s for _, s in pairs if s not in score_set.class_scores]
        if lacking:
            raise EdgeVadError(f"{scores}: {len(lacking)} videos (e.g. {lacking[0]!r}) have no class scores; give every video '<video>::classes' or none")
        det = detection_map(
            {g: truth.segments(g, lengths[g]) for g, _ in pairs},
            {g: score_set.class_scores[s][: lengths[g]] for g, s in pairs},
            score_set.class_names,
        )
        metrics["map"], metrics["map_avg"] = det["map"], det["map_avg"]
        if det["classes_without_gt"]:
            log.warning("classes with no ground-truth segment, left out of mAP: %s", ", ".join(det["classes_without_gt"]))  # type: ignore[arg-type]

    anomalous = sum(bool(m.any()) for m in masks.values())
    counts = {"videos": len(masks), "anomalous": anomalous, "normal": len(masks) - anomalous, "frames": sum(lengths.values())}
    _print_table(metrics, counts, f"edge-vad eval: {scores.name} vs {gt.name} ({truth.format})")
    if json_out is not None:
        write_json_atomic(Path(json_out), metrics, indent=2, allow_nan=False)
    return metrics
