"""Per-stage latency on the best local backend: cold start (load + first inference) and p50/p95/p99 after warm-up.

Stages, as the runtime runs them (edge_vad.runtime.coarse, fine_model):
- preprocess        decoded BGR frame -> the backbone's input tensor (resize, normalise or quantise)
- coarse_backbone   one frame through the backbone graph (feature, heatmap, trunk feature)
- qacm              the QACM student on a window of W real features
- fine_encoder      the fine stage's own image tower (clip-vit-b16 bundles); lite0-minilm reuses the coarse
                    backbone's trunk feature and runs only the describer (the ImageNet classifier on it, for
                    the description id) on the frames the fine stage reads
- fine_head         one recurrent step of the fine head plus the cosine with the text table (FineModel.step)
plus `coarse_frame_to_score`: CoarseStage.step as a whole (decoded frame -> score), the figure behind the
issue's ">= 30 fps on one core".

Inputs are real frames of the benchmark video and the features they produce, not random tensors.
Cold start = loading that stage's artifact + its first inference, timed per stage in a fresh backend.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_vad.backends import backend_status
from edge_vad.bench.profiles import TargetProfile
from edge_vad.bench.timing import summarise, time_calls, timed_once
from edge_vad.bundle.manifest import Manifest
from edge_vad.config import RuntimeConfig
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.backend_choice import live_edgetpu, serving_target
from edge_vad.runtime.backend_plan import choose_target, plan_backends
from edge_vad.runtime.coarse import CoarseOutput, CoarseStage
from edge_vad.runtime.fine_model import FineModel
from edge_vad.runtime.loaded_models import ModelSet, SharedModel, load_fine_tables, load_stage

log = logging.getLogger("edge_vad.bench")

STAGE_NAMES = ("preprocess", "coarse_backbone", "qacm", "fine_encoder", "fine_head")
LATENCY_THREADS = 1  # the coarse figure is "on one core": every stage is timed with one intra-op thread


def choose_backend(manifest: Manifest, profile: TargetProfile) -> Tuple[str, str]:
    """(backend, why): what `run` itself chooses here when the target lists it (on a CPU: int8 TFLite where the
    bundle's int8 parity passed); else the target's first preferred backend that runs here AND that the bundle
    has artifacts for; else the runtime's automatic choice on this machine (labelled as not the target's)."""
    _, auto = choose_target(manifest, None)
    if auto in profile.preferred_backends:
        return auto, f"{auto}: what `edge-vad run` chooses on this machine (edge_vad.runtime.backend_choice)"
    for name in profile.preferred_backends:
        status = backend_status(name)
        if status.available and serving_target(manifest, name) is not None \
                and (name != "edgetpu" or live_edgetpu(None) is None):  # the Edge TPU: only where its delegate loads
            return name, f"{name} is the target's preferred backend #{profile.preferred_backends.index(name) + 1}"
    wanted = ", ".join(profile.preferred_backends)
    return auto, (f"best local backend: none of the target's backends ({wanted}) can run this bundle here, "
                  f"so {auto} stands in")


def _load_stage(models: Dict[str, SharedModel], manifest: Manifest, plan_stage: Any) -> SharedModel:
    models[plan_stage.stage] = load_stage(plan_stage, manifest)
    return models[plan_stage.stage]


def _entry(model: Optional[SharedModel], cold_ms: Optional[float], samples: Optional[List[float]],
           note: str = "", artifact: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {"backend": model.backend_label if model is not None else ("numpy/OpenCV" if samples else None),
                           "artifact": artifact or None, "runs": samples is not None,
                           "cold_ms": None if cold_ms is None else round(cold_ms, 3),
                           "p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "iterations": 0}
    if samples is not None:
        out.update(summarise(samples))
    if note:
        out["note"] = note
    return out


def measure_stages(bundle_dir: Path, manifest: Manifest, backend: str, frames: Sequence[np.ndarray],
                   iterations: int, warmup: int, threads: int = LATENCY_THREADS) -> Dict[str, Any]:
    """{stages: {name: entry}, coarse_frame_to_score: entry + fps, threads}. See the module doc."""
    if not frames:
        raise EdgeVadError("no frames to time the stages with; the benchmark video decoded to nothing")
    plan = plan_backends(manifest, bundle_dir, backend, RuntimeConfig(threads=threads), fine=manifest.fine is not None)
    by_stage = {s.stage: s for s in plan.stages}
    models: Dict[str, SharedModel] = {}
    n = len(frames)
    stages: Dict[str, Any] = {}
    try:
        # Backbone: cold = load + first inference on a preprocessed real frame.
        bb_plan = by_stage["coarse_backbone"]
        _, bb_load_ms = timed_once(lambda: _load_stage(models, manifest, bb_plan))
        head_plan = by_stage["coarse_head"]
        _, head_load_ms = timed_once(lambda: _load_stage(models, manifest, head_plan))
        set_ = ModelSet(manifest, bundle_dir, plan, models)
        coarse = CoarseStage(set_)
        _, pre_first_ms = timed_once(lambda: coarse.preprocess(frames[0]))
        # the Preprocessor refills one buffer per call: keep a copy of each frame's feed
        feeds = [{k: v.copy() for k, v in coarse.preprocess(f).items()} for f in frames]
        raw = coarse.preprocess.raw
        _, bb_first_ms = timed_once(lambda: coarse.backbone.infer(feeds[0], raw_inputs=raw))
        outs = [coarse.backbone.infer(f, raw_inputs=raw) for f in feeds]

        stages["preprocess"] = _entry(None, pre_first_ms,
                                      time_calls(lambda i: coarse.preprocess(frames[i % n]), iterations, warmup),
                                      note=f"{frames[0].shape[1]}x{frames[0].shape[0]} BGR frame -> "
                                           f"{coarse.preprocess.spec.describe()} ({coarse.preprocess.mode})")
        stages["coarse_backbone"] = _entry(
            coarse.backbone, bb_load_ms + bb_first_ms,
            time_calls(lambda i: coarse.backbone.infer(feeds[i % n], raw_inputs=raw), iterations, warmup),
            artifact=bb_plan.file.name)

        # QACM on windows of real head inputs (the runtime's own update: CoarseStage.qacm builds them).
        state = coarse.initial_state()
        windows = []
        for out in outs:
            state, _ = coarse.qacm(state, *coarse.head_parts(out))
            windows.append(state.window.reshape(tuple(d if d is not None else 1 for d in coarse.head_input.shape)))
        name = coarse.head_input.name
        _, head_first_ms = timed_once(lambda: coarse.head.infer({name: windows[0]}))
        stages["qacm"] = _entry(coarse.head, head_load_ms + head_first_ms,
                                time_calls(lambda i: coarse.head.infer({name: windows[i % n]}), iterations, warmup),
                                artifact=head_plan.file.name)

        stages.update(_fine_stages(bundle_dir, manifest, plan, by_stage, models, frames, outs, coarse,
                                   iterations, warmup))

        # The whole coarse stage on decoded frames (what the pipeline calls per frame).
        holder = [coarse.initial_state()]

        def coarse_step(i: int) -> None:
            holder[0], _ = coarse.step(holder[0], frames[i % n])

        step = _entry(coarse.backbone, None, time_calls(coarse_step, iterations, warmup),
                      note="CoarseStage.step: preprocess + backbone + window + QACM + heatmap, one frame")
        step["fps"] = round(1000.0 / step["p50_ms"], 2) if step["p50_ms"] else None
        step["frame_size"] = f"{frames[0].shape[1]}x{frames[0].shape[0]}"
    finally:
        for model in models.values():
            model.close()
    return {"stages": stages, "coarse_frame_to_score": step, "threads": threads}


def _fine_stages(bundle_dir: Path, manifest: Manifest, plan: Any, by_stage: Dict[str, Any],
                 models: Dict[str, SharedModel], frames: Sequence[np.ndarray], outs: List[Dict[str, np.ndarray]],
                 coarse: CoarseStage, iterations: int, warmup: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if manifest.fine is None or "fine_head" not in by_stage:
        why = "the bundle has no fine stage"
        return {"fine_encoder": _entry(None, None, None, note=why), "fine_head": _entry(None, None, None, note=why)}
    n = len(frames)
    enc_plan = by_stage.get("fine_image")
    enc_load_ms = None
    if enc_plan is not None:
        _, enc_load_ms = timed_once(lambda: _load_stage(models, manifest, enc_plan))
    desc_plan = by_stage.get("fine_describer")
    if desc_plan is not None:
        _, enc_load_ms = timed_once(lambda: _load_stage(models, manifest, desc_plan))
    head_plan = by_stage["fine_head"]
    _, head_load_ms = timed_once(lambda: _load_stage(models, manifest, head_plan))
    set_ = ModelSet(manifest, bundle_dir, plan, models)
    load_fine_tables(set_)
    fine = FineModel(set_)
    if fine.needs_image:
        assert fine.encoder is not None and fine.image_preprocess is not None
        enc, pre = fine.encoder, fine.image_preprocess
        enc_feeds = [{k: v.copy() for k, v in pre(f).items()} for f in frames]
        _, first_ms = timed_once(lambda: enc.infer(enc_feeds[0], raw_inputs=pre.raw))
        out["fine_encoder"] = _entry(enc, (enc_load_ms or 0.0) + first_ms,
                                     time_calls(lambda i: enc.infer(enc_feeds[i % n], raw_inputs=pre.raw),
                                                iterations, warmup), artifact=enc_plan.file.name if enc_plan else "")
    kept = [fine.frame_record(i, float(i), f, _coarse_output(o)) for i, (f, o) in enumerate(zip(frames, outs))]
    if not fine.needs_image and fine.describer is not None and desc_plan is not None:
        _, first_ms = timed_once(lambda: fine.encode(kept[0]))
        out["fine_encoder"] = _entry(fine.describer, (enc_load_ms or 0.0) + first_ms,
                                     time_calls(lambda i: fine.encode(kept[i % n]), iterations, warmup),
                                     artifact=desc_plan.file.name,
                                     note=f"{manifest.fine.encoder}: the fine image feature is the coarse backbone's "
                                          f"{manifest.fine.image_input}; this is the ImageNet classifier giving the "
                                          "frame's description id, run only for the frames the fine stage reads")
    elif not fine.needs_image:
        out["fine_encoder"] = _entry(None, None, None, note=(
            f"{manifest.fine.encoder}: the fine image feature is the coarse backbone's {manifest.fine.image_input}, "
            "computed for every frame anyway; no separate encoder runs (0 ms extra)"))
    # (feature, description id) per frame, exactly as the fine worker derives them (runs the tower if any)
    records = [fine.encode(k) for k in kept]
    rows = [fine.row_of(d) for _, d in records]
    holder = [fine.initial_state()]

    def head_step(i: int) -> None:
        feature, _ = records[i % n]
        _, holder[0] = fine.step(feature, rows[i % n], holder[0])

    _, first_ms = timed_once(lambda: head_step(0))
    out["fine_head"] = _entry(fine.head, head_load_ms + first_ms, time_calls(head_step, iterations, warmup),
                              artifact=head_plan.file.name,
                              note="one recurrent step + cosine with the text table (FineModel.step)")
    return out


def _coarse_output(out: Dict[str, np.ndarray]) -> Any:
    """The CoarseOutput fields FineModel.frame_record reads, from backbone outputs (score unused there)."""
    return CoarseOutput(score=0.0, logit=0.0, feature=out["feature"].reshape(-1),
                        trunk_feature=out["trunk_feature"].reshape(-1), heatmap=np.zeros((1, 1), np.float32))
