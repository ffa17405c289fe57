"""`run_eval` end to end on small synthetic files, and its errors on bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_vad.cli.eval_cmd import run_eval
from edge_vad.errors import EdgeVadError
from edge_vad.eval.metrics import frame_metrics

SNIPPET = 4
CLASSES = np.array(["normal", "fighting", "shooting"])


def _fixture(tmp_path: Path, with_classes: bool = True):
    """GT masks (npz) for 4 videos and per-snippet scores spelt differently, plus one extra video."""
    rng = np.random.default_rng(1)
    masks = {
        "v=a__#1_label_B1-0-0": np.r_[np.zeros(8), np.ones(12), np.zeros(6)],  # 26 frames: 6 snippets + 2 cut
        "v=b__#1_label_B2-0-0": np.r_[np.ones(8), np.zeros(16)],
        "v=c__#1_label_A": np.zeros(16),
        "v=d__#1_label_A": np.zeros(20),
        "v=gt_only__#1_label_A": np.zeros(12),
    }
    np.savez(tmp_path / "gt.npz", **{k: m.astype(np.uint8) for k, m in masks.items()})
    snippets = {"v=a__#1_label_B1-0-0__0": 6, "v=b__#1_label_B2-0-0.mp4": 6, "v=c__#1_label_A__0": 4, "v=d__#1_label_A": 5, "scores_only": 3}
    arrays = {}
    for name, n in snippets.items():
        arrays[name] = rng.uniform(0, 1, n).round(3)
        if with_classes:
            arrays[name + "::classes"] = rng.dirichlet(np.ones(3), n)
    if with_classes:
        arrays["__classes__"] = CLASSES
    np.savez(tmp_path / "scores.npz", **arrays)
    return masks, arrays


def test_run_eval_end_to_end(tmp_path: Path, caplog, capsys):
    masks, arrays = _fixture(tmp_path)
    out = tmp_path / "out" / "metrics.json"
    with caplog.at_level(logging.WARNING, logger="edge_vad.eval"):
        result = run_eval(tmp_path / "gt.npz", tmp_path / "scores.npz", SNIPPET, out)
    payload = json.loads(out.read_text())
    assert set(payload) == {"ap", "ap_pr_auc", "auc", "ano_auc", "far", "map", "map_avg"}
    assert payload == result
    assert list(payload["map"]) == ["0.1", "0.2", "0.3", "0.4", "0.5"]
    assert all(v is None or 0.0 <= v <= 1.0 for v in payload["map"].values())
    # Same numbers as frame_metrics on hand-expanded scores with GT cut to 4 x snippets.
    pairs = {"v=a__#1_label_B1-0-0": "v=a__#1_label_B1-0-0__0", "v=b__#1_label_B2-0-0": "v=b__#1_label_B2-0-0.mp4",
             "v=c__#1_label_A": "v=c__#1_label_A__0", "v=d__#1_label_A": "v=d__#1_label_A"}
    expanded = {g: np.repeat(arrays[s], SNIPPET) for g, s in pairs.items()}
    expected = frame_metrics({g: masks[g][: len(expanded[g])] for g in pairs}, expanded)
    for key, value in expected.items():
        assert payload[key] == pytest.approx(value)
    # One warning line per side for the unmatched videos, naming them.
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("1 videos in the ground truth") and "gt_only" in line for line in lines)
    assert any(line.startswith("1 videos in the scores") and "scores_only" in line for line in lines)
    assert "AP (average_precision_score)" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # the temp file was renamed away


def test_run_eval_without_class_scores_has_frame_keys_only(tmp_path: Path):
    _fixture(tmp_path, with_classes=False)
    out = tmp_path / "m.json"
    out.write_text("old")
    run_eval(tmp_path / "gt.npz", tmp_path / "scores.npz", SNIPPET, out)
    assert set(json.loads(out.read_text())) == {"ap", "ap_pr_auc", "auc", "ano_auc", "far"}


def test_run_eval_sizes_xd_annotations_from_scores(tmp_path: Path):
    (tmp_path / "annotations.txt").write_text("v=a__#1_label_B1-0-0.mp4 8 20\nv=b__#1_label_B2-0-0 0 8\n")
    _fixture(tmp_path, with_classes=True)
    result = run_eval(tmp_path / "annotations.txt", tmp_path / "scores.npz", SNIPPET, None)
    assert result["far"] is not None  # the label_A videos became normal ground truth
    assert result["map"]["0.1"] is not None  # single-class names attribute the segments


def test_bad_input_raises_one_line_errors(tmp_path: Path):
    _fixture(tmp_path)
    gt, scores = tmp_path / "gt.npz", tmp_path / "scores.npz"
    cases = []
    cases.append(((tmp_path / "nope.npz", scores, SNIPPET), "not found"))
    cases.append(((gt, tmp_path / "nope.npz", SNIPPET), "not found"))
    (tmp_path / "list.txt").write_text("Abuse/Abuse028_x264.mp4\n")
    cases.append(((tmp_path / "list.txt", scores, SNIPPET), "unrecognised ground-truth format"))
    cases.append(((gt, scores, 1), "pass --snippet 16"))  # per-snippet scores read as per-frame
    cases.append(((gt, scores, 0), "--snippet must be >= 1"))
    np.savez(tmp_path / "other.npz", x=np.zeros(4))
    cases.append(((gt, tmp_path / "other.npz", 1), "no video of"))
    np.savez(tmp_path / "nan.npz", **{"v=c__#1_label_A": np.array([0.1, np.nan])})
    cases.append(((gt, tmp_path / "nan.npz", 8), "NaN"))
    np.savez(tmp_path / "nonames.npz", **{"v=c__#1_label_A": np.zeros(4), "v=c__#1_label_A::classes": np.zeros((4, 3))})
    cases.append(((gt, tmp_path / "nonames.npz", 4), "__classes__"))
    np.savez(tmp_path / "dup.npz", **{"v=c__#1_label_A__0": np.zeros(4), "v=c__#1_label_A__1": np.zeros(4)})
    cases.append(((gt, tmp_path / "dup.npz", 4), "name the same video"))
    (tmp_path / "multi.txt").write_text("v=m__#1_label_B1-G-0 8 20\n")  # two classes: segments unattributed
    np.savez(tmp_path / "m.npz", **{"v=m__#1_label_B1-G-0": np.zeros(6), "v=m__#1_label_B1-G-0::classes": np.zeros((6, 3)), "__classes__": CLASSES})
    cases.append(((tmp_path / "multi.txt", tmp_path / "m.npz", SNIPPET), "without a class"))
    for (g, s, n), message in cases:
        with pytest.raises(EdgeVadError, match=message) as info:
            run_eval(g, s, n, tmp_path / "never.json")
        assert "\n" not in str(info.value)
    assert not (tmp_path / "never.json").exists()
