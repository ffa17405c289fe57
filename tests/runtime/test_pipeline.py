"""The on-device cascade: preprocessing, the coarse stage against PyTorch, the fine stage against PyTorch,
the fine worker's drop policy, and the pipeline's event lifecycle (start / update / end held until the clip
and the fine result are in), with scripted scores so the gate does exactly what the test says.

Bundle helpers: tests/edge_vad_test_support/bundles.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np
import pytest

from edge_vad.backends.base import TensorSpec, quantize
from edge_vad.bundle import Preprocessing
from edge_vad.config import Config, EventsConfig, FineConfig, GateConfig
from edge_vad.constants import LITE0_MEAN, LITE0_STD
from edge_vad.head_input import FEATURE_MOTION, head_inputs
from edge_vad.runtime.coarse import CoarseState, push_window
from edge_vad.runtime.events import Event, FineSummary
from edge_vad.runtime.fine_model import FineFrame
from edge_vad.runtime.fine_worker import DROP_REASON, FineJob, FineWorker
from edge_vad.runtime.metrics import Metrics
from edge_vad.runtime.pipeline import Pipeline, sample_evenly
from edge_vad.runtime.preprocess import Preprocessor, normalise, resize_frame
from edge_vad.runtime.report import ScoreLog
from edge_vad.sources import open_source
from edge_vad_test_support.bundles import any_bundle, exported_bundle, shipped_bundle, write_test_fine, write_video
from edge_vad_test_support.scripted import ScriptedCoarse


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory) -> Path:
    return any_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Tuple[Path, Path]:
    return exported_bundle(tmp_path_factory)


# ----------------------------------------------------------------------------- preprocessing
PRE = Preprocessing(size=224, mean=list(LITE0_MEAN), std=list(LITE0_STD), resize="whole frame, cv2.INTER_AREA, no crop",
                    interpolation="area")


@pytest.mark.parametrize("dtype,scale,zp,layout", [("int8", 0.0078119, -1, "NHWC"), ("uint8", 0.0213, 131, "NHWC"),
                                                   ("int8", 0.0301, 7, "NCHW")])
def test_lookup_table_equals_quantising_the_float_path(dtype, scale, zp, layout) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    shape = (1, 224, 224, 3) if layout == "NHWC" else (1, 3, 224, 224)
    pre = Preprocessor(PRE, TensorSpec("image", shape, dtype, scale, zp))
    assert pre.raw and pre.layout == layout
    fed = pre(frame)["image"]
    float_path = normalise(resize_frame(frame, PRE), PRE)  # [224, 224, 3] RGB
    expected = quantize(float_path, scale, zp, dtype)
    if layout == "NCHW":
        expected = expected.transpose(2, 0, 1)
    assert fed.dtype == np.dtype(dtype) and fed.shape == shape
    np.testing.assert_array_equal(fed[0], expected)
    assert len(np.unique(fed)) > 40  # a real spread of values, not a constant table


def test_float_preprocessing_matches_the_exporter() -> None:
    pytest.importorskip("torch", reason="needs the train extra (PyTorch) for the exporter's preprocess_bgr")
    from edge_vad_models.backbones import get_backbone_spec, preprocess_bgr

    spec = get_backbone_spec("efficientnet-lite0").preprocess
    pre_m = Preprocessing(size=spec.size, mean=list(spec.mean), std=list(spec.std), pixel_format=spec.pixel_format,
                          resize="whole frame, cv2.INTER_AREA, no crop", interpolation=spec.interpolation)
    frame = np.random.default_rng(1).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    ours = Preprocessor(pre_m, TensorSpec("image", (1, 3, 224, 224), "float32"))(frame)["image"]
    theirs = preprocess_bgr(frame, spec).numpy()
    np.testing.assert_array_equal(ours, theirs)  # same arithmetic, bit for bit


def test_window_repeats_the_first_feature_then_slides() -> None:
    state = CoarseState()
    state = push_window(state, np.array([1.0, 10.0]), 3)
    np.testing.assert_array_equal(state.window, [[1, 10], [1, 10], [1, 10]])
    state = push_window(state, np.array([2.0, 20.0]), 3)
    state = push_window(state, np.array([3.0, 30.0]), 3)
    state = push_window(state, np.array([4.0, 40.0]), 3)
    np.testing.assert_array_equal(state.window, [[2, 20], [3, 30], [4, 40]])
    assert state.frames == 4


def test_sample_evenly_keeps_ends_and_count() -> None:
    assert sample_evenly(list(range(5)), 8) == [0, 1, 2, 3, 4]
    picked = sample_evenly(list(range(32)), 4)
    assert picked[0] == 0 and picked[-1] == 31 and len(picked) == 4 and picked == sorted(picked)


# ----------------------------------------------------------------------------- scripted pipeline
class RecordingFine:
    """A fine model that records which frames it saw; `hold` blocks its step until released."""

    classes = ("normal", "fighting")
    needs_image = False

    def __init__(self, hold: Optional[threading.Event] = None):
        self.hold = hold
        self.seen: List[int] = []

    def frame_record(self, index, t, image, coarse):
        return FineFrame(index, t, coarse.feature, np.zeros(1, np.float32))

    def initial_state(self):
        return np.zeros(1, np.float32)

    def encode(self, frame):
        return frame.feature, int(frame.describe_from[0])

    def row_of(self, description_id):
        return description_id

    def step(self, feature, row, state):
        if self.hold is not None:
            self.hold.wait(10)
        self.seen.append(int(feature[0]))
        return np.array([0.0, 1.0], np.float32), state + 1

    def summarise(self, frames, logits, rows, description_ids):
        return FineSummary("fighting", {"normal": 0.25, "fighting": 0.75}, f"{len(frames)} frames", [frames[-1]])


def _grey_video(tmp_path: Path, n: int, fps: float = 10.0) -> Path:
    frames = [np.full((48, 64, 3), (7 * i) % 256, np.uint8) for i in range(n)]
    return write_video(tmp_path / "grey.mp4", frames, fps)


def _cfg(**gate) -> Config:
    g = dict(smoothing_frames=1, on_threshold=0.6, off_threshold=0.4, min_open_s=0.0, cooldown_s=0.0)
    g.update(gate)
    return Config(gate=GateConfig(**g), fine=FineConfig(frames_per_update=4, pre_roll_s=0.5, queue_size=4),
                  events=EventsConfig(clip_pre_roll_s=0.5, clip_post_roll_s=0.5))


def test_event_lifecycle_with_clip_snapshot_and_fine(tmp_path: Path) -> None:
    video = _grey_video(tmp_path, 60)  # 6 s at 10 fps
    scores = [0.1] * 20 + [0.9] * 20 + [0.1] * 20  # open on frame 20, close on frame 40
    fine = RecordingFine()
    seen_at_emit: List[Tuple[Event, bool, bool]] = []

    def emit(event: Event) -> None:  # what exists on disk when each record goes out
        seen_at_emit.append((event, bool(event.clip) and Path(event.clip).is_file(),
                             bool(event.snapshot) and Path(event.snapshot).is_file()))

    log = ScoreLog()
    metrics = Metrics()
    with open_source(str(video)) as src:
        result = Pipeline(src, ScriptedCoarse(scores), fine, _cfg(), emit=emit, metrics=metrics,
                          events_dir=tmp_path / "ev", score_log=log, snippet_frames=8).run()
    kinds = [e.type for e, _, _ in seen_at_emit]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == 1 and kinds.count("end") == 1
    assert kinds.count("update") >= 2  # one per fine result while open
    start, end = seen_at_emit[0][0], seen_at_emit[-1]
    assert (start.start_frame, start.start_s) == (20, pytest.approx(2.0))
    assert (end[0].end_frame, end[0].end_s) == (39, pytest.approx(3.9))
    assert end[1] and end[2], "the end record must name a clip and a snapshot that already exist"
    assert end[0].snapshot.endswith(".channel-mean.jpg")
    assert end[0].fine["class"] == "fighting" and end[0].frames == 20
    assert not list((tmp_path / "ev" / "clips").glob("*.partial*"))
    # clip covers [start - pre_roll, end + post_roll] = frames 15..44
    cap = cv2.VideoCapture(end[0].clip)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    cap.release()
    # the fine stage saw the pre-roll (frames 15..19, sampled) and every update of the opening
    assert min(fine.seen) < 20 and min(fine.seen) >= 15 and max(fine.seen) == 39
    assert end[0].fine["description"] == f"{len(fine.seen)} frames"
    # score log: one row per scored frame, gate column as the gate said, class only while open
    assert list(log.frames) == list(range(60))
    assert [i for i in range(60) if log.gate[i]] == list(range(20, 40))
    assert all(log.fine_class(i) == "" for i in range(20)) and log.fine_class(39) == "fighting"
    assert result.events == {"start": 1, "update": kinds.count("update"), "end": 1}
    text = metrics.exposition().decode()
    assert 'edge_vad_events_total{source="grey",type="end"} 1.0' in text


def test_openings_shorter_than_min_open_emit_nothing(tmp_path: Path) -> None:
    video = _grey_video(tmp_path, 30)
    scores = [0.1] * 10 + [0.9] * 3 + [0.1] * 17  # open 0.3 s < min_open_s 1.0
    events: List[Event] = []
    with open_source(str(video)) as src:
        Pipeline(src, ScriptedCoarse(scores), RecordingFine(), _cfg(min_open_s=1.0), emit=events.append,
                 events_dir=tmp_path / "ev").run()
    assert events == []
    assert not (tmp_path / "ev" / "clips").exists() or not list((tmp_path / "ev" / "clips").iterdir())


def test_stride_scores_every_nth_frame_and_clips_keep_all(tmp_path: Path) -> None:
    video = _grey_video(tmp_path, 40)
    log = ScoreLog()
    events: List[Event] = []
    with open_source(str(video)) as src:
        Pipeline(src, ScriptedCoarse([0.9] * 40), None, _cfg(), emit=events.append, events_dir=tmp_path / "ev",
                 stride=3, score_log=log).run()
    assert list(log.frames) == list(range(0, 40, 3))
    end = events[-1]
    assert end.type == "end" and end.end_frame == 39 and end.fine is None
    cap = cv2.VideoCapture(end.clip)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 40  # every frame, scored or not
    cap.release()


def test_fine_worker_drops_oldest_and_reports_it() -> None:
    hold = threading.Event()
    dropped: List[FineJob] = []
    worker = FineWorker(RecordingFine(hold), queue_size=2, on_drop=dropped.append, name="t")
    frame = lambda i: FineFrame(i, i / 10, np.full(4, i, np.float32), np.zeros(1, np.float32))  # noqa: E731
    try:
        worker.submit(FineJob(1, (frame(0),), seq=1))  # taken by the worker, which then blocks in step()
        deadline = time.monotonic() + 5
        while worker._jobs.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        for seq in range(2, 7):  # 5 more jobs into a queue of 2: jobs 2, 3, 4 are dropped, oldest first
            worker.submit(FineJob(1, (frame(seq),), seq=seq))
        assert time.monotonic() - t0 < 0.5, "submit must never wait for the worker"
        assert [j.seq for j in dropped] == [2, 3, 4]
        assert worker.dropped_jobs == 3 and worker.dropped_frames == 3
        hold.set()
        assert worker.drain(5)
        results = worker.poll()
        assert [r.seq for r in results] == [1, 5, 6]
        assert results[-1].frames_total == 3  # one episode: frames 0, 5, 6
    finally:
        hold.set()
        worker.close(2)


def test_pipeline_never_waits_for_a_stuck_fine_stage(tmp_path: Path) -> None:
    hold = threading.Event()
    video = _grey_video(tmp_path, 80)
    metrics = Metrics()
    events: List[Event] = []
    cfg = _cfg()
    cfg = cfg.model_copy(update={"fine": FineConfig(frames_per_update=4, pre_roll_s=0.0, queue_size=1)})
    try:
        with open_source(str(video)) as src:
            result = Pipeline(src, ScriptedCoarse([0.9] * 80), RecordingFine(hold), cfg, emit=events.append,
                              metrics=metrics, snippet_frames=4).run()
    finally:
        hold.set()
    assert result.frames_scored == 80
    assert result.fine_dropped_frames > 0
    text = metrics.exposition().decode()
    assert f'edge_vad_dropped_frames_total{{reason="{DROP_REASON}",source="grey"}} {float(result.fine_dropped_frames)}' in text
    assert events[-1].type == "end"  # the event still ends, with whatever the fine stage managed


# ----------------------------------------------------------------------------- real bundle vs PyTorch
def _real_frames(shared_data: Path, n: int) -> List[np.ndarray]:
    clip = sorted((shared_data / "fight-surv" / "fight").glob("*.mp4"))[0]
    frames = []
    with open_source(str(clip)) as src:
        for frame in src.frames():
            frames.append(frame.image)
            if len(frames) == n:
                break
    return frames


def _load(bundle: Path, backend: Optional[str] = None, fine: bool = True):
    from edge_vad.bundle import verify_bundle
    from edge_vad.runtime.backend_plan import plan_backends
    from edge_vad.runtime.loaded_models import load_models

    manifest = verify_bundle(bundle).manifest
    return load_models(bundle, manifest, plan_backends(manifest, bundle, backend, fine=fine))


def test_coarse_scores_equal_the_pytorch_student(exported, shared_data: Path) -> None:
    """Runtime scores frame by frame == QACMStudent.forward over the whole sequence (first feature repeated),
    fed the head inputs of the runtime's own backbone features: proves the window semantics, the streaming
    frame difference and the QACM graph."""
    torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
    from edge_vad_models.checkpoint import load_coarse

    from edge_vad.runtime.coarse import CoarseStage

    bundle, ckpt = exported
    frames = _real_frames(shared_data, 24)  # > W = 15: the window fills, then slides
    models = _load(bundle, fine=False)
    try:
        coarse = CoarseStage(models)
        state, scores, feats = coarse.initial_state(), [], []
        for f in frames:
            state, out = coarse.step(state, f)
            scores.append(out.score)
            feats.append(out.feature)
    finally:
        models.close()
    loaded = load_coarse(ckpt)
    assert loaded.head_input == FEATURE_MOTION
    with torch.no_grad():
        x = torch.from_numpy(head_inputs(np.stack(feats), loaded.head_input)[None])
        ref = torch.sigmoid(loaded.student(x)).numpy()[0]
    np.testing.assert_allclose(np.array(scores), ref, atol=1e-5, rtol=0)
    assert np.ptp(ref) > 1e-4  # the scores move with the frames: the comparison is not of constants


def test_bundle_with_per_frame_imagenet_logits_asks_for_a_re_export(exported, tmp_path: Path) -> None:
    """An older lite0-minilm bundle (descriptions from the backbone's own per-frame logits): one clear line."""
    import json
    import shutil

    from edge_vad.errors import EdgeVadError
    from edge_vad.runtime.fine_model import FineModel

    bundle = tmp_path / "older"
    shutil.copytree(exported[0], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["descriptions"]["source"] = "imagenet_logits"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    models = _load(bundle)
    try:
        with pytest.raises(EdgeVadError, match="ImageNet logits on every frame .* re-export it with `edge-vad export`"):
            FineModel(models)
    finally:
        models.close()


def test_fine_stage_equals_the_pytorch_fine_stage(exported, shared_data: Path) -> None:
    """Per-frame class logits (explicit RWKV state, text-table row per frame) and the event's MIL top-k
    probabilities == FineStage.forward on the same features and rows."""
    torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
    from edge_vad_models.checkpoint import load_coarse
    from edge_vad_models.training.fine import load_fine

    from edge_vad.runtime.coarse import CoarseStage
    from edge_vad.runtime.fine_model import FineModel
    from edge_vad.runtime.fine_worker import FineProcessor

    bundle, ckpt = exported
    frames = _real_frames(shared_data, 20)
    models = _load(bundle)
    try:
        coarse, fine = CoarseStage(models), FineModel(models)
        described = []  # the describer runs only for the frames the fine stage reads, never per scored frame
        infer = fine.describer.infer
        fine.describer.infer = lambda feed: described.append(1) or infer(feed)
        state, records = coarse.initial_state(), []
        for i, f in enumerate(frames):
            state, out = coarse.step(state, f)
            records.append(fine.frame_record(i, i / 10, f, out))
        assert described == []
        proc = FineProcessor(fine)
        result = proc.run(FineJob(1, tuple(records[:12]), seq=1))
        assert len(described) == 12
        result = proc.run(FineJob(1, tuple(records[12:]), final=True, seq=2))
        ids = [fine.encode(r)[1] for r in records]  # the describer graph on each frame's trunk feature
        ep_logits = np.stack([np.log(p) for _, p in result.frame_probs])  # only job 2's frames
        summary = result.summary
    finally:
        models.close()
    stage, _ = load_fine(ckpt)
    feats = torch.from_numpy(np.stack([r.feature for r in records])[None])
    with torch.no_grad():  # the describer's ids == PyTorch's classifier on the same trunk features
        ref_ids = load_coarse(ckpt).backbone.classifier(torch.from_numpy(np.stack([r.describe_from for r in records])))
    assert ids == ref_ids.argmax(dim=-1).tolist()
    rows = torch.tensor([[fine.row_of(i) for i in ids]])
    with torch.no_grad():
        out = stage.eval()(feats, description_ids=rows)
    ref_frame = torch.log_softmax(out.snippet_logits[0], dim=-1).numpy()[12:]
    np.testing.assert_allclose(ep_logits, ref_frame, atol=1e-4)
    ref_probs = out.video_probs[0].numpy()
    assert summary is not None
    np.testing.assert_allclose([summary.probs[c] for c in stage.class_names], ref_probs, atol=1e-4)
    assert summary.class_name == stage.class_names[int(ref_probs.argmax())]
    assert summary.top_snippets and all(0 <= i < 20 for i in summary.top_snippets)


def test_int8_tflite_coarse_stage_tracks_fp32(shared_data: Path) -> None:
    """Where the shipped bundle has the int8 target: the lookup-table input path gives features close to the
    fp32 graph's (DESIGN.md measured cosine 0.985 mean / 0.95 min on real frames; floors below that)."""
    bundle = shipped_bundle()
    if bundle is None:
        pytest.skip("no shipped default bundle yet (edge_vad/bundles/default)")
    from edge_vad.backends import backend_status
    from edge_vad.bundle import load_manifest
    from edge_vad.runtime.coarse import CoarseStage

    if "tflite-int8" not in load_manifest(bundle).targets:
        pytest.skip("the shipped bundle has no tflite-int8 target")
    if not backend_status("tflite").available:
        pytest.skip("no TFLite interpreter (pip install ai-edge-litert)")
    frames = _real_frames(shared_data, 12)
    feats = {}
    for backend in ("onnxruntime", "tflite"):
        models = _load(bundle, backend, fine=False)
        try:
            coarse = CoarseStage(models)
            assert coarse.preprocess.raw == (backend == "tflite")
            state, feats[backend] = coarse.initial_state(), []
            for f in frames:
                state, out = coarse.step(state, f)
                feats[backend].append(out.trunk_feature)
        finally:
            models.close()
    a, b = np.stack(feats["onnxruntime"]), np.stack(feats["tflite"])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.mean() > 0.95 and cos.min() > 0.9, cos


def test_two_sources_share_one_set_of_models(bundle_dir: Path, tmp_path: Path) -> None:
    """[[sources]] with two cameras (here two files): one pipeline thread each, models loaded once, one
    report folder per source."""
    from edge_vad.runtime.runner import RunOptions, run

    video = write_video(tmp_path / "cam.mp4", [np.full((90, 160, 3), 40 * (i % 5), np.uint8) for i in range(12)], 6.0)
    cfg = tmp_path / "two.toml"
    cfg.write_text(f"""
[[sources]]
name = "cam-a"
uri = "{video}"
[[sources]]
name = "cam-b"
uri = "{video}"
stride = 2
[http]
enabled = false
""")
    summary = run(RunOptions(config=cfg, bundle=bundle_dir, report=tmp_path / "rep", events_dir=tmp_path / "ev"))
    assert sorted(r.source for r in summary.results) == ["cam-a", "cam-b"]
    scored = {r.source: r.frames_scored for r in summary.results}
    assert scored == {"cam-a": 12, "cam-b": 6}
    stages = [line.split(":")[0] for line in summary.backends]
    assert len(stages) == len(set(stages)) and "coarse_backbone" in stages  # each artifact loaded once
    for name in ("cam-a", "cam-b"):
        assert (tmp_path / "rep" / name / "scores.csv").read_text().count("\n") == scored[name] + 1


def _clip_bundle(exported: Tuple[Path, Path], root: Path) -> Tuple[Path, Path]:
    """A clip-vit-b16 bundle: the test coarse.pt, a tiny random CLIP, a random fine head over its embeddings."""
    import copy
    import shutil

    import torch
    from edge_vad_models.fine.clip_vit_b16 import TINY_CLIP_CFG, build_clip

    from edge_vad.cli.export_cmd import run_export

    ckpt = root / "ckpt"
    ckpt.mkdir(parents=True)
    shutil.copy(exported[1] / "coarse.pt", ckpt / "coarse.pt")
    embed = TINY_CLIP_CFG["embed_dim"]
    torch.manual_seed(3)
    write_test_fine(ckpt, "clip-vit-b16", feature_dim=embed, text_dim=embed)
    torch.manual_seed(4)
    weights = root / "tiny_clip.pt"
    torch.save(build_clip(None, copy.deepcopy(TINY_CLIP_CFG)).state_dict(), weights)
    run_export(str(ckpt), "onnx", None, root / "bundle", True, "clip-vit-b16", weights)
    return root / "bundle", ckpt


def test_clip_fine_stage_equals_pytorch(exported, shared_data: Path, tmp_path: Path) -> None:
    """clip-vit-b16 path: CLIP pixels (shorter side, centre crop), the image tower, the zero-shot description
    (argmax cosine with the bundle's description embeddings), then the fine head == the PyTorch modules."""
    torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
    from edge_vad_export.fine_export import clip_pixels
    from edge_vad_models.fine.clip_vit_b16 import build_clip_encoders
    from edge_vad_models.training.fine import load_fine

    from edge_vad.runtime.coarse import CoarseStage
    from edge_vad.runtime.fine_model import FineModel
    from edge_vad.runtime.fine_worker import FineProcessor

    bundle, ckpt = _clip_bundle(exported, tmp_path)
    frames = _real_frames(shared_data, 10)
    models = _load(bundle)
    try:
        assert models.get("fine_image") is not None
        coarse, fine = CoarseStage(models), FineModel(models)
        state, records = coarse.initial_state(), []
        for i, f in enumerate(frames):
            state, out = coarse.step(state, f)
            records.append(fine.frame_record(i, i / 10, f, out))
        assert all(r.image is not None and r.feature is None for r in records)
        encoded = [fine.encode(r) for r in records]
        result = FineProcessor(fine).run(FineJob(1, tuple(records), final=True, seq=1))
        table_emb = models.description_embeddings
    finally:
        models.close()
    encoders = build_clip_encoders(tmp_path / "tiny_clip.pt")
    size = encoders.image.image_size
    with torch.no_grad():
        ref_emb = torch.cat([encoders.image.encode(torch.from_numpy(clip_pixels(f, size))) for f in frames]).numpy()
    ours = np.stack([e for e, _ in encoded])
    np.testing.assert_allclose(ours, ref_emb, atol=1e-4)
    assert [d for _, d in encoded] == [int(np.argmax(table_emb @ e)) for e in ref_emb]
    stage, _ = load_fine(ckpt)
    rows = torch.tensor([[fine.row_of(d) for _, d in encoded]])
    with torch.no_grad():
        out = stage.eval()(torch.from_numpy(ref_emb[None]), description_ids=rows)
    np.testing.assert_allclose([np.log(p) for _, p in result.frame_probs],
                               torch.log_softmax(out.snippet_logits[0], dim=-1).numpy(), atol=1e-4)
    np.testing.assert_allclose([result.summary.probs[c] for c in stage.class_names], out.video_probs[0].numpy(),
                               atol=1e-4)
