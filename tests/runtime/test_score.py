"""`edge-vad score`: inputs, the class-score rule, and the .npz feeding `edge-vad eval` end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_vad.cli.score_cmd import class_scores, dense_scores, expand_inputs, per_snippet, score
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.report import ScoreLog
from edge_vad_test_support import bundles


ALWAYS_OPEN = "[gate]\nsmoothing_frames = 1\non_threshold = 0.000001\noff_threshold = 0.0000001\nmin_open_s = 0.0\n"


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    return bundles.any_bundle(tmp_path_factory)


# ----------------------------------------------------------------------------- no models
def test_inputs_videos_folders_and_image_folders(tmp_path: Path) -> None:
    (tmp_path / "vids").mkdir()
    for name in ("b.mp4", "a.avi", "notes.txt"):
        (tmp_path / "vids" / name).write_bytes(b"x")
    (tmp_path / "frames01").mkdir()
    for i in range(3):
        (tmp_path / "frames01" / f"{i:03d}.jpg").write_bytes(b"x")
    single = tmp_path / "single.mkv"
    single.write_bytes(b"x")
    items = expand_inputs([tmp_path / "vids", tmp_path / "frames01", single])
    assert [(i.name, i.path.name) for i in items] == [("a", "a.avi"), ("b", "b.mp4"), ("frames01", "frames01"),
                                                     ("single", "single.mkv")]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.mp4").write_bytes(b"x")
    with pytest.raises(EdgeVadError, match="would both be scored as 'a'"):
        expand_inputs([tmp_path / "vids", tmp_path / "other"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeVadError, match="no videos"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(EdgeVadError, match="no such file"):
        expand_inputs([tmp_path / "missing.mp4"])


def test_class_score_rule_and_snippet_means() -> None:
    log = ScoreLog()
    for i, (s, g) in enumerate([(0.1, 0), (0.8, 1), (0.9, 1), (0.7, 1), (0.2, 0)]):
        log.add(i, i / 10, s, bool(g), "fighting" if g else "")
    log.add_probs(1, np.array([0.2, 0.8], np.float32))  # the fine stage ran on frame 1 only
    scores, gate, probs = dense_scores(log)
    assert gate.tolist() == [False, True, True, True, False]
    # frames 2, 3: no result of their own but the same opening -> frame 1's; closed frames: none
    assert probs[0] is None and probs[4] is None and np.array_equal(probs[3], probs[1])
    cls = class_scores(scores, probs, 2, normal=0)
    np.testing.assert_allclose(cls[:, 1], [0.0, 0.8 * 0.8, 0.9 * 0.8, 0.7 * 0.8, 0.0], rtol=1e-6)
    np.testing.assert_allclose(cls.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(per_snippet(np.arange(5, dtype=np.float32), 2), [0.5, 2.5, 4.0])
    np.testing.assert_allclose(per_snippet(cls, 4)[1], cls[4])


# ----------------------------------------------------------------------------- with a bundle
@pytest.fixture(scope="module")
def two_videos(shared_data: Path, tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("score_videos")
    normal = bundles.stitched_stream(shared_data, folder / "calm.mp4", labels=(0,), fps=8.0, first=2)
    fight = bundles.stitched_stream(shared_data, folder / "brawl.mp4", labels=(0, 1), fps=8.0, first=3)
    return folder, {"calm": normal.frame_labels, "brawl": fight.frame_labels}


def test_score_then_eval_with_an_npz_ground_truth(bundle_dir: Path, two_videos: tuple, tmp_path: Path) -> None:
    from edge_vad.cli.eval_cmd import run_eval

    folder, labels = two_videos
    out = tmp_path / "scores.npz"
    counts = score([folder], out, bundle=bundle_dir, fine=False, progress=False)
    assert counts == {name: len(lab) for name, lab in labels.items()}
    with np.load(out) as data:
        assert sorted(data.files) == ["brawl", "calm"]  # --no-fine: no class scores
        assert all(data[k].dtype == np.float32 and np.all((data[k] >= 0) & (data[k] <= 1)) for k in data.files)
    gt = tmp_path / "gt.npz"
    np.savez(gt, **labels)
    metrics = run_eval(gt, out)
    assert set(metrics) >= {"ap", "auc", "ano_auc", "far"}
    assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 < metrics["ap"] <= 1.0


def test_score_with_classes_per_snippet_feeds_map(bundle_dir: Path, two_videos: tuple, tmp_path: Path) -> None:
    """Class scores for every video + `__classes__`; with a class-labelled ground truth eval also gives mAP."""
    from edge_vad.bundle import load_manifest
    from edge_vad.cli.eval_cmd import run_eval

    manifest = load_manifest(bundle_dir)
    if manifest.fine is None:
        pytest.skip("the bundle has no fine stage")
    anomaly = next(c for c in manifest.classes if c != manifest.classes[manifest.fine.normal_class])
    folder, labels = two_videos
    cfg = tmp_path / "open.toml"
    cfg.write_text(ALWAYS_OPEN)
    out = tmp_path / "scores.npz"
    snippet = 4
    score([folder], out, bundle=bundle_dir, snippet=snippet, config=cfg, progress=False)
    with np.load(out) as data:
        names = list(data["__classes__"])
        assert names == manifest.classes
        for video, lab in labels.items():
            snippets = -(-len(lab) // snippet)
            assert data[video].shape == (snippets,) and data[video + "::classes"].shape == (snippets, len(names))
            np.testing.assert_allclose(data[video + "::classes"].sum(axis=1), 1.0, atol=1e-5)
            assert data[video + "::classes"][:, names.index(anomaly)].max() > 0  # the fine stage ran
    # UCF_Annotation.txt format (path, frames, class, intervals): the fight part of "brawl" as `anomaly`
    fight = np.flatnonzero(labels["brawl"])
    gt = tmp_path / "UCF_Annotation.txt"
    gt.write_text(f"X/brawl.mp4 {len(labels['brawl'])} {anomaly.replace(' ', '')} {fight[0]} {fight[-1] + 1} -1 -1\n"
                  f"Normal/calm.mp4 {len(labels['calm'])} Normal -1 -1 -1 -1\n")
    metrics = run_eval(gt, out, snippet=snippet)
    assert "map" in metrics and metrics["map_avg"] is not None and 0.0 <= metrics["map_avg"] <= 1.0


def test_score_an_image_folder(bundle_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    frames = sorted((shared_data / "ucsd-ped2" / "testing" / "frames" / "01").glob("*.jpg"))[:10]
    folder = tmp_path / "ped2_01"
    folder.mkdir()
    for f in frames:
        shutil.copy(f, folder / f.name)
    out = tmp_path / "ped2.npz"
    assert score([folder], out, bundle=bundle_dir, fine=False, progress=False) == {"ped2_01": 10}
    with np.load(out) as data:
        assert data["ped2_01"].shape == (10,)


GOLDEN_CLIPS_PER_LABEL = 6  # validation clips per label: about 220 frames at 8 fps, ~20 s on 2 cores
GOLDEN_AUC_FLOOR = 0.55  # measured 0.667 (clip max) for models/default exported as-is; chance is 0.5


def test_shipped_bundle_ranks_fight_clips_above_normal_ones(shared_data: Path, tmp_path: Path) -> None:
    """Golden floor for the TRAINED default bundle: held-out fight-surv clips (the validation split's first six
    of each label, resampled to 320x180 at 8 fps), each scored as its own video; clip score = max frame score.
    Random-head bundles cannot pass this, so it runs only on the shipped bundle."""
    bundle = bundles.shipped_bundle()
    if bundle is None:
        pytest.skip("no shipped default bundle yet (edge_vad/bundles/default)")
    from sklearn.metrics import roc_auc_score

    from edge_vad.datasets import fight_surv_clips, split_by_group, stitch_clips

    _, val = split_by_group(fight_surv_clips(shared_data))
    picked = [c for c in val if c.label == 0][:GOLDEN_CLIPS_PER_LABEL] + \
             [c for c in val if c.label == 1][:GOLDEN_CLIPS_PER_LABEL]
    folder = tmp_path / "val"
    for clip in picked:
        stitch_clips([clip], folder / f"{clip.name}.mp4", size=(320, 180), fps=8.0)
    out = tmp_path / "val.npz"
    score([folder], out, bundle=bundle, fine=False, progress=False)
    with np.load(out) as data:
        auc = roc_auc_score([c.label for c in picked], [float(data[c.name].max()) for c in picked])
    assert auc >= GOLDEN_AUC_FLOOR, auc
