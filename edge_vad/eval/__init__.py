"""Evaluation of anomaly scores: ground-truth parsers, frame metrics, temporal-detection mAP.

Runtime-side (numpy + scikit-learn only, never torch). `edge-vad eval` is edge_vad.cli.eval_cmd.run_eval.
"""

from __future__ import annotations

from edge_vad.eval.ground_truth import GroundTruth, canonical_name, load_ground_truth
from edge_vad.eval.metrics import detection_map, frame_metrics
from edge_vad.eval.scores_io import ScoreSet, load_scores

__all__ = ["GroundTruth", "ScoreSet", "canonical_name", "detection_map", "frame_metrics", "load_ground_truth", "load_scores"]
