"""Explanations (issue 7; issue 15's design): heatmap channel weights, heatmaps on real frames, the pointing game,
t-SNE, LIME R^2. The checkpoint-level tests run on both designs: the shipped default ("trunk+fa-motion", projection
branch, window-statistics head: the device's fa-motion heatmap) when models/default is there, and always on a
random checkpoint of the older design (deconvolution branch, "feature" head input, QACM: class activation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad.head_input import TRUNK_FA_MOTION, head_inputs  # noqa: E402
from edge_vad_models.checkpoint import COARSE_FILE, coarse_state, default_checkpoint_dir  # noqa: E402
from edge_vad_models.coarse_heads import AFEDTeacher, QACMStudent  # noqa: E402
from edge_vad_models.explain import heatmaps as H  # noqa: E402
from edge_vad_models.explain import lime_r2 as L  # noqa: E402
from edge_vad_models.explain import pointing as P  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
TRUNK_CACHE = REPO_ROOT / "runs" / "cache" / "frames"  # the training frame cache: used when present, never required
POINTING_FLOOR = 0.6  # fa-motion heatmap of the shipped default on Ped2 test video 04, every 6th masked frame
GRADIENT_COSINE_FLOOR = 0.9  # default checkpoint measured 0.97-0.99 (heatmaps.py doc); random heads 0.4-0.75


def _has_default() -> bool:
    return (default_checkpoint_dir() / COARSE_FILE).is_file()


@pytest.fixture(scope="module")
def old_design_dir(tmp_path_factory) -> Path:
    """A checkpoint of the pre-issue-15 design with random heads: deconvolution branch, head input "feature", QACM
    student (trunk: the packaged Lite0)."""
    from edge_vad_models.backbones import AdjustMobileNet
    from edge_vad_models.checkpoint import save_atomic

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("random_ckpt")
    save_atomic(coarse_state(AdjustMobileNet(), AFEDTeacher(128, dim=64), {"in_dim": 128, "dim": 64},
                             QACMStudent(128), {"in_dim": 128}, 2.5), folder / COARSE_FILE)
    return folder


@pytest.fixture(scope="module", params=["default", "old-design"])
def checkpoint_dir(request, old_design_dir) -> Path:
    """Each design in turn: models/default (skipped when absent) and the random older-design checkpoint."""
    if request.param == "old-design":
        return old_design_dir
    if not _has_default():
        pytest.skip("needs the trained models in models/default")
    return default_checkpoint_dir()


@pytest.fixture(scope="module")
def explainer(checkpoint_dir):
    torch.set_num_threads(1)
    return H.CoarseExplainer(checkpoint_dir)


def _ped2_frames(shared_data: Path, video: str, n: int, step: int = 1) -> list[np.ndarray]:
    import cv2

    from edge_vad.datasets import image_files

    files = image_files(shared_data / "ucsd-ped2" / "testing" / "frames" / video)[::step][:n]
    return [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]


# ---- channel weights ---------------------------------------------------------------------------------------------

def test_student_weights_are_exact_when_every_relu_passes():
    """With non-negative weights and positive biases every ReLU passes; for a feature constant over the window the
    student is then affine in it, and student_weights must be exactly its slope."""
    torch.manual_seed(1)
    student = QACMStudent(16, hidden=8).eval()
    with torch.no_grad():
        for m in student.net:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.abs_()
                m.bias.fill_(0.1)
    w = H.student_weights(student)
    f0, f1 = torch.rand(16), torch.rand(16)
    window = lambda f: f.expand(student.window, 16)[None]  # noqa: E731
    with torch.no_grad():
        delta = student.forward_window(window(f1)) - student.forward_window(window(f0))
    assert float(delta) == pytest.approx(float(w @ (f1 - f0).numpy()), rel=1e-4, abs=1e-5)


def test_teacher_weights_are_exact_along_the_residual_path():
    """TimeMix outputs zeroed: logit = head(LN(proj f)); then (logit - head(beta) - b) * sigma(f) = w . f + const."""
    torch.manual_seed(2)
    teacher = AFEDTeacher(12, dim=8).eval()
    with torch.no_grad():
        for block in teacher.rwkv.blocks:
            block.output.weight.zero_()
        teacher.rwkv.norm.weight.uniform_(0.5, 1.5)
        teacher.rwkv.norm.bias.normal_()
    w = H.teacher_weights(teacher)
    ln = teacher.rwkv.norm

    def scaled(f):
        with torch.no_grad():
            h = teacher.proj(f)
            sigma = torch.sqrt(h.var(unbiased=False) + ln.eps)
            logit = teacher(f[None, None])[0, 0]
            return float((logit - teacher.head(ln.bias)[0]) * sigma)

    f0, f1 = torch.randn(12), torch.randn(12)
    assert scaled(f1) - scaled(f0) == pytest.approx(float(w @ (f1 - f0).numpy()), rel=1e-4, abs=1e-4)


def test_channel_weights_shape_and_unknown_head(checkpoint_dir, explainer):
    if explainer.fa_motion:  # trunk+fa-motion: no channel weights, one error that names the map it uses instead
        for head in H.HEADS:
            with pytest.raises(EdgeVadError, match="no heatmap channel weights.*'fa-motion' heatmap"):
                H.channel_weights(checkpoint_dir, head)
        assert explainer.maps == [H.FA_MOTION] == [explainer.deployed_map] and explainer.weights == {}
    else:
        for head in H.HEADS:
            w = H.channel_weights(checkpoint_dir, head)
            assert w.shape == (128,) and w.dtype == np.float32 and np.isfinite(w).all() and np.abs(w).max() > 0
        assert explainer.maps == ["teacher", "student"] and explainer.deployed_map == "student"
    with pytest.raises(EdgeVadError, match="unknown head"):
        H.channel_weights(checkpoint_dir, "fine")


@pytest.mark.skipif(not _has_default(), reason="needs the trained models in models/default")
def test_default_weights_follow_the_mean_gradient(shared_data):
    """The gradient-free weights must say what the trained heads respond to: cosine to the mean input gradient
    over real frames above a floor (random heads would not pass it)."""
    explainer = H.CoarseExplainer("default")
    if explainer.fa_motion:
        pytest.skip("the default checkpoint is 'trunk+fa-motion': its heatmap (fa-motion) has no channel weights to "
                    "compare with an input gradient (test_channel_weights_shape_and_unknown_head checks the error)")
    feats = explainer.fa_from_trunk(explainer.trunk_maps(_ped2_frames(shared_data, "01", 32))).mean(axis=(2, 3))
    inputs = head_inputs(feats, explainer.ckpt.head_input)
    for head, model in (("teacher", explainer.ckpt.teacher), ("student", explainer.ckpt.student)):
        x = torch.from_numpy(inputs)[None].requires_grad_(True)
        model(x).sum().backward()
        grad = x.grad[0].mean(dim=0).numpy()[:feats.shape[1]]  # the F half: the part the heatmap weights map
        w = explainer.weights[head]
        cosine = float(w @ grad / (np.linalg.norm(w) * np.linalg.norm(grad)))
        assert cosine > GRADIENT_COSINE_FLOOR, f"{head}: cosine {cosine:.3f}"


# ---- heatmaps ----------------------------------------------------------------------------------------------------

def test_class_activation_is_the_relu_of_the_weighted_sum():
    fa = np.zeros((2, 3, 4, 4), np.float32)
    fa[0, 0, 1, 2] = 2.0
    fa[0, 1, 3, 3] = 1.0
    heat = H.class_activation(fa, np.array([1.0, -1.0, 0.5], np.float32))
    assert heat.shape == (2, 4, 4)
    assert heat[0, 1, 2] == 2.0 and heat[0, 3, 3] == 0.0 and heat[1].max() == 0.0
    with pytest.raises(EdgeVadError):
        H.class_activation(fa, np.ones(5, np.float32))


def test_heatmaps_have_the_frame_shape_and_vary_on_a_real_clip(shared_data, explainer):
    frames = _ped2_frames(shared_data, "04", 121)
    shown, previous = frames[30::30], frames[29::30]  # frames 30, 60, 90, 120, each with the frame before it
    for name in explainer.maps:
        heat = explainer.frame_heatmaps(shown, name, previous=previous if explainer.fa_motion else None)
        assert heat.shape == (4, *frames[0].shape[:2])
        assert all(h.std() > 0 and h.max() > 0 for h in heat)
        assert (heat >= 0).all()
    with pytest.raises(EdgeVadError, match="no heatmap 'fine'"):
        explainer.frame_heatmaps(shown, "fine")
    if explainer.fa_motion:  # the device's map: nothing at a stream's first frame, its F_A change after
        stream = explainer.frame_heatmaps(frames[:3])
        assert stream[0].max() == 0.0 and stream[1].max() > 0 and stream[2].max() > 0


@pytest.mark.skipif(not _has_default(), reason="needs the trained models in models/default")
def test_explain_draws_the_heatmap_the_device_draws(shared_data):
    """For the shipped design, explain's map must be the shipped bundle's (edge_vad.runtime.coarse) frame by frame."""
    from edge_vad.bundle import verify_bundle
    from edge_vad.bundle.manifest import default_bundle_dir
    from edge_vad.runtime.backend_plan import plan_backends
    from edge_vad.runtime.coarse import CoarseStage
    from edge_vad.runtime.loaded_models import load_models

    explainer = H.CoarseExplainer("default")
    bundle = default_bundle_dir()
    manifest = verify_bundle(bundle).manifest
    if not explainer.fa_motion:
        pytest.skip("the default checkpoint uses class-activation heatmaps")
    if json.loads((bundle / "manifest.json").read_text())["source_checkpoints"]["coarse.pt"] != explainer.ckpt.sha256:
        pytest.skip("the shipped bundle was exported from another coarse.pt than models/default")
    frames = _ped2_frames(shared_data, "04", 6)
    models = load_models(bundle, manifest, plan_backends(manifest, bundle, "onnxruntime", fine=False))
    try:
        coarse = CoarseStage(models)
        state, device = coarse.initial_state(), []
        for f in frames:
            state, out = coarse.step(state, f)
            device.append(out.heatmap)
    finally:
        close = getattr(models, "close", None)
        if close:
            close()
    ours = explainer.explain_frames(iter(frames)).heat[H.FA_MOTION]
    assert ours.shape == np.stack(device).shape
    for t, (a, b) in enumerate(zip(ours, device)):
        assert np.allclose(a, b, rtol=1e-3, atol=1e-3 * max(float(np.abs(b).max()), 1e-6)), f"frame {t}"
        assert np.unravel_index(np.argmax(a), a.shape) == np.unravel_index(np.argmax(b), b.shape) or t == 0


def test_select_top_frames_spreads_and_fills():
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.05])
    assert H.select_top_frames(scores, 2, min_gap=2) == [1, 4]
    assert H.select_top_frames(scores, 4, min_gap=10) == [1, 2, 3, 4]  # too short for the gap: filled by score


def test_heatmap_command_writes_overlays_and_figures(shared_data, explainer, tmp_path):
    import cv2

    from edge_vad_models.features import iter_frames

    clip = sorted((shared_data / "fight-surv" / "fight").glob("*.mp4"))[0]
    summary = H.explain_heatmaps(clip, tmp_path, top=3, explainer=explainer)
    assert len(summary["files"]["overlays"]) == 3 and len(summary["frames"]) == 3
    for rel in summary["files"]["overlays"]:
        assert cv2.imread(str(tmp_path / rel)) is not None
    # a teacher-vs-student figure only where the heads have a map each (class activation)
    figures = ["contact_sheet"] + ([] if explainer.fa_motion else ["teacher_vs_student"])
    assert set(summary["files"]) == {"overlays", *figures}
    for key in figures:
        assert cv2.imread(str(tmp_path / summary["files"][key])) is not None
    assert summary["heatmap"] == explainer.deployed_map
    assert (summary["channel_weight_rules"] == {}) == explainer.fa_motion
    for frame in summary["frames"]:
        assert 0.0 <= frame["student_score"] <= 1.0 and 0.0 <= frame["teacher_score"] <= 1.0
    video = explainer.explain_frames(iter_frames(clip))  # the frame shown first is the video's top-scoring one
    assert max(f["student_score"] for f in summary["frames"]) == pytest.approx(float(video.scores["student"].max()))
    assert video.heat[explainer.deployed_map].shape[0] == summary["n_frames"]
    assert json.loads((tmp_path / "heatmaps.json").read_text())["n_frames"] == summary["n_frames"] > 3


# ---- pointing game -----------------------------------------------------------------------------------------------

def _blob(shape, centre, sigma=6.0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def test_pointing_synthetic_known_answers():
    shape = (60, 90)
    mask = np.zeros(shape, bool)
    mask[20:35, 50:70] = True  # around a bright blob at (27, 60)
    tally = P.PointingTally()
    tally.add({"on": _blob(shape, (27, 60)), "off": _blob(shape, (5, 5)), "flat": np.zeros(shape, np.float32)}, mask)
    assert tally.hits == {"on": 1, "off": 0, "flat": 0}
    assert tally.flat["flat"] == 1
    assert tally.chance == pytest.approx(mask.mean())
    # a peak 3 pixels beside the mask misses, and hits with 5 pixels of tolerance
    near = _blob(shape, (27, 72), sigma=2.0)
    assert not P.is_hit(near, mask) and P.is_hit(near, P.dilate(mask, 5))


def test_load_masks_unpacks_the_ped2_format(tmp_path):
    masks = np.zeros((3, 8, 24), bool)
    masks[1, 2:4, 5:9] = True
    np.savez(tmp_path / "m.npz", **{"01": np.packbits(masks, axis=-1)})
    assert np.array_equal(P.load_masks(tmp_path / "m.npz", "01"), masks)
    with pytest.raises(EdgeVadError, match="no masks for video '02'"):
        P.load_masks(tmp_path / "m.npz", "02")


def test_pointing_checks_every_folder_before_any_model_runs(tmp_path, monkeypatch):
    (tmp_path / "01").mkdir()
    (tmp_path / "06").mkdir()
    np.savez(tmp_path / "m.npz", **{"01": np.packbits(np.zeros((2, 4, 16), bool), axis=-1)})

    def no_model(*_a, **_k):
        raise AssertionError("the explainer was built before the arguments were checked")

    monkeypatch.setattr(P, "CoarseExplainer", no_model)
    with pytest.raises(EdgeVadError, match="no masks for video '06'"):
        P.pointing_game([tmp_path / "01", tmp_path / "06"], tmp_path / "m.npz")


def test_pointing_on_a_real_ped2_video(shared_data, explainer, tmp_path):
    ped2 = shared_data / "ucsd-ped2"
    report = P.pointing_game([ped2 / "testing" / "frames" / "04"], ped2 / "test_pixel_masks.npz", stride=6,
                             explainer=explainer)
    P.write_pointing(report, tmp_path / "p.json")
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["n_frames"] == report["n_frames"] == len(range(0, 150, 6))  # video 04 has 150 masked frames
    assert saved["heatmap"] == explainer.deployed_map and saved["maps"] == explainer.maps
    assert saved["hit_rate"] == saved[explainer.deployed_map]["hit_rate"]
    for key in (*explainer.maps, "chance"):
        assert 0.0 <= saved[key]["hit_rate"] <= 1.0
    assert 0.0 < saved["chance"]["hit_rate"] < 0.2  # objects cover a few percent of the frame
    assert set(saved["per_video"]) == {"04"}
    if explainer.fa_motion:  # the device's map finds the cyclist: measured 0.92 here (0.78 over held-out folds)
        assert saved["hit_rate"] >= POINTING_FLOOR > 5 * saved["chance"]["hit_rate"]


# ---- t-SNE -------------------------------------------------------------------------------------------------------

def test_held_out_clips_come_from_the_recorded_folds(shared_data, old_design_dir, tmp_path):
    """tsne / lime explain the videos the folds hold out: each video once over all folds, fight-surv first."""
    from edge_vad_models.explain import held_out_clips
    from edge_vad_models.training.cv_folds import default_folds

    folds = default_folds(shared_data)
    recorded = {"split": {"folds": [{"fight": [c.name for c in f.fight], "ped2": [c.name for c in f.ped2]}
                                    for f in folds]}}
    (tmp_path / "metrics.json").write_text(json.dumps(recorded))
    every = [c.name for c in held_out_clips(tmp_path, shared_data)]
    assert sorted(every) == sorted(c.name for f in folds for c in f.held_out) and len(set(every)) == len(every)
    assert every == [c.name for f in folds for c in f.fight] + [c.name for f in folds for c in f.ped2]
    assert [c.name for c in held_out_clips(tmp_path, shared_data, 1)] == [c.name for c in folds[1].held_out]
    with pytest.raises(EdgeVadError, match="fold 9 does not exist"):
        held_out_clips(tmp_path, shared_data, 9)
    # no metrics.json: the recipe's folds of the data; a pre-cross-validation split: its validation videos
    assert [c.name for c in held_out_clips(old_design_dir, shared_data)] == every
    (tmp_path / "metrics.json").write_text(json.dumps({"split": {"fight_val": ["fi005"], "ped2_val": ["ped2_test_01"],
                                                                 "ped2_normal_val": ["ped2_train_01"]}}))
    assert [c.name for c in held_out_clips(tmp_path, shared_data)] == ["fi005", "ped2_test_01", "ped2_train_01"]
    (tmp_path / "metrics.json").write_text(json.dumps({"split": {"folds": [{"fight": ["nope"], "ped2": []}]}}))
    with pytest.raises(EdgeVadError, match="not in"):
        held_out_clips(tmp_path, shared_data)


@pytest.mark.skipif(not _has_default(), reason="needs the trained fine stage in models/default")
def test_tsne_writes_figure_and_numbers(shared_data, tmp_path):
    from edge_vad_models.explain import recorded_folds
    from edge_vad_models.explain.tsne import explain_tsne

    out = tmp_path / "tsne.png"
    summary = explain_tsne(out, "default", shared_data, TRUNK_CACHE, limit=5, fold=1)
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    saved = json.loads(out.with_suffix(".json").read_text())
    fold = recorded_folds(default_checkpoint_dir(), shared_data)[1]
    assert saved["fold"] == 1 and set(saved["videos"]) <= set(fold["fight"] + fold["ped2"])
    assert saved["videos"][-1] == fold["ped2"][-1]  # spread over fight-surv, then Ped2: both datasets
    assert saved["n_videos"] == 5 and saved["n_snippets"] == sum(saved["snippets_per_class"].values()) >= 5
    assert sum(n > 0 for n in saved["snippets_per_class"].values()) >= 2
    assert 0.0 <= saved["nearest_text_accuracy"] <= 1.0
    assert summary["class_names"] == saved["class_names"]


# ---- LIME R^2 ----------------------------------------------------------------------------------------------------

def test_lime_r2_is_one_for_a_model_linear_in_the_mask():
    """Mean-fill + a linear read-out of the frame mean is exactly linear in the segment mask: R^2 ~ 1."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 6)).astype(np.float32)
    a = rng.normal(size=6).astype(np.float32)
    fit = L.lime_r2(feats, lambda x, keep: x.mean(axis=1) @ a, L.LimeConfig(samples=128))
    assert fit.r2 is not None and fit.r2 > 0.98


def test_lime_r2_is_low_for_a_model_that_is_not_additive():
    """The parity of the switched-on segments has no linear part to fit: R^2 is computed, and small
    (measured 0.055; LIME's locality kernel cannot make it look additive)."""
    feats = np.arange(80, dtype=np.float32).reshape(40, 2)
    cfg = L.LimeConfig(segments=4, samples=256)
    first_frames = [0, 10, 20, 30]  # one frame of each of the 4 segments of 10 frames

    def parity(x, keep):
        return (keep[:, first_frames].sum(axis=1) % 2).astype(np.float64)

    fit = L.lime_r2(feats, parity, cfg)
    assert fit.r2 is not None and fit.r2 < 0.2
    constant = L.lime_r2(feats, lambda x, keep: np.ones(len(x)), cfg)
    assert constant.r2 is None and constant.output_range == 0.0


def test_lime_masks_weights_and_fill():
    masks = L.sample_masks(5, 20, np.random.default_rng(0))
    assert masks.shape == (20, 5) and masks[0].all()
    w = L.lime_weights(np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], float), 0.25)
    assert w[0] == pytest.approx(1.0) and 0 < w[2] < w[1] < 1
    keep = L.frame_keep(np.array([[1.0, 0.0]]), 5)
    assert keep.tolist() == [[True, True, True, False, False]]
    x = L.perturb(np.arange(10, dtype=np.float32).reshape(5, 2), keep, "mean")
    assert x[0, 4].tolist() == [4.0, 5.0] and x[0, 0].tolist() == [0.0, 1.0]
    assert L.perturb(np.ones((5, 2), np.float32), keep, "zeros")[0, 4].tolist() == [0.0, 0.0]


@pytest.mark.skipif(not _has_default(), reason="needs the trained models in models/default")
def test_lime_command_on_real_videos(shared_data, tmp_path):
    from edge_vad_models.explain import recorded_folds

    cfg = L.LimeConfig(samples=48, segments=6)
    report = L.explain_lime(2, tmp_path / "lime.json", "default", shared_data, TRUNK_CACHE, cfg, fold=0)
    saved = json.loads((tmp_path / "lime.json").read_text())
    fold = recorded_folds(default_checkpoint_dir(), shared_data)[0]
    assert saved["videos"] == [fold["fight"][0], fold["ped2"][-1]] and saved["fold"] == 0
    assert len(saved["videos"]) == 2 and saved["method"]["fill"] == "mean"
    assert saved["head_input"] == H.CoarseExplainer("default").ckpt.head_input
    for stage in ("coarse", "fine"):
        assert saved[stage]["n_videos"] + saved[stage]["n_constant_output"] == 2
        values = [v["r2"] for v in saved[stage]["per_video"].values() if v["r2"] is not None]
        assert values and all(0.0 <= r <= 1.0 for r in values)
    assert report["coarse"]["r2_mean"] == saved["coarse"]["r2_mean"]


def test_lime_coarse_predictor_reads_trunk_fa_motion_rows_as_they_are():
    """For "trunk+fa-motion" the perturbed rows are the head input (pooled trunk + F_A motion, module doc): the
    predictor must feed them unchanged, so a switched-off frame's F_A change is the video's mean change."""
    from edge_vad_models.coarse_heads import WindowStatsHead

    torch.manual_seed(3)
    head = WindowStatsHead(10, 4).eval()
    rows = np.random.default_rng(0).normal(size=(2, 9, 10)).astype(np.float32)
    with torch.no_grad():
        probs = torch.sigmoid(head(torch.from_numpy(rows)))
    expected = probs.topk(max(1, 9 // 16), dim=1).values.mean(dim=1).numpy()
    got = L.coarse_predictor(head, TRUNK_FA_MOTION)(rows, np.ones((2, 9), bool))
    assert np.allclose(got, expected)


# ---- CLI ---------------------------------------------------------------------------------------------------------

def test_cli_pointing_names_a_missing_mask_key(shared_data, tmp_path):
    from typer.testing import CliRunner

    from edge_vad.cli.app import app

    frames = tmp_path / "frames" / "zz"
    frames.mkdir(parents=True)
    result = CliRunner().invoke(app, ["explain", "pointing", "--frames", str(frames), "--masks",
                                      str(shared_data / "ucsd-ped2" / "test_pixel_masks.npz"),
                                      "--json", str(tmp_path / "p.json")])
    assert result.exit_code != 0 and not (tmp_path / "p.json").exists()
    assert isinstance(result.exception, EdgeVadError) and "no masks for video 'zz'" in str(result.exception)
