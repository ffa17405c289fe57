"""Which backend runs which artifact of a bundle, decided before anything loads (no torch, no model).

    plan = plan_backends(manifest, bundle_dir, requested="onnxruntime", runtime=cfg.runtime)

The (bundle target, backend) pair comes from edge_vad.runtime.backend_choice (one decision with its reasons, logged
as one INFO line); `plan_backends` then names, per runtime stage, the artifact, its backend and the backend's load
options.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from edge_vad.bundle.manifest import Artifact, Manifest, TargetProfile
from edge_vad.config import RuntimeConfig
from edge_vad.errors import EdgeVadError, MissingDependency
from edge_vad.runtime.backend_choice import BackendChoice, HostProbe, choose_backend, live_host
from edge_vad.runtime.threads import resolve_threads
from edge_vad.runtime.trt_plan import tensorrt_options

log = logging.getLogger("edge_vad.stages")

RUNTIME_STAGES = ("coarse_backbone", "coarse_head", "fine_image", "fine_describer", "fine_head")


@dataclass(frozen=True)
class StagePlan:
    stage: str  # one of RUNTIME_STAGES
    artifact: str  # the manifest's artifact name
    file: Path
    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendPlan:
    target: str  # the manifest target whose artifacts run
    backend: str  # the target backend (the coarse stage runs on it)
    stages: Tuple[StagePlan, ...]
    reasons: Tuple[str, ...] = ()  # why this backend (BackendChoice.reasons)
    threads: int = 1  # intra-op threads of the CPU backends (edge_vad.runtime.threads)
    threads_source: str = ""  # where that number comes from

    def stage(self, name: str) -> Optional[StagePlan]:
        return next((s for s in self.stages if s.stage == name), None)


def choose_target(manifest: Manifest, requested: Optional[str], host: Optional[HostProbe] = None) -> Tuple[str, str]:
    """(target, backend) of choose_backend (see edge_vad.runtime.backend_choice)."""
    choice = choose_backend(manifest, requested, host or live_host())
    return choice.target, choice.backend


def _stage_artifact(manifest: Manifest, target: TargetProfile, stage: str, backend: str) -> Optional[str]:
    names = [n for n in target.artifacts if manifest.artifacts[n].stage == stage]
    prefer = "tflite" if backend in ("tflite", "edgetpu") else "onnx"
    names.sort(key=lambda n: manifest.artifacts[n].format != prefer)
    return names[0] if names else None


def _fine_stage_needs(manifest: Manifest, stage: str) -> bool:
    """Whether a bundle with a fine stage must have an artifact for `stage`."""
    if stage == "fine_head":
        return True
    if stage == "fine_image":
        return manifest.fine is not None and manifest.fine.image_input == "clip_visual"
    return manifest.descriptions is not None and manifest.descriptions.source == "frame_describer"


def _artifact_backend(name: str, art: Artifact, target: TargetProfile, backend: str) -> str:
    """The backend for one artifact: the target's where it can load it, else the host's for its format.
    The fine head is a small recurrent graph and the describer one matrix product: both run on onnxruntime
    (the bundle's notes say so)."""
    if art.format == "tflite":
        return backend if backend in ("tflite", "edgetpu") else "tflite"
    if backend == "tensorrt" and art.stage not in ("fine_head", "fine_describer") and target.tensorrt is not None \
            and name in target.tensorrt.onnx_artifacts:
        return "tensorrt"
    return "onnxruntime"


def _options(backend: str, plan_name: str, stage: str, target: TargetProfile, runtime: RuntimeConfig,
             bundle_dir: Path, manifest: Manifest, threads: int) -> Dict[str, Any]:
    if backend == "onnxruntime":
        if stage == "fine_describer":  # one small Gemm, now and then: a thread pool of its own would only idle
            threads = 1
        # tensorrt_fp16: used only where onnxruntime has its TensorRT execution provider (NVIDIA's Jetson wheels):
        # it builds its own engines, cached, in fp16 unless fp32 is asked for (it has no calibration for int8)
        return {"threads": threads, "tensorrt_fp16": runtime.precision != "fp32"}
    if backend == "tflite":
        return {"num_threads": threads}
    if backend == "edgetpu":
        return {"device": runtime.edgetpu_device} if runtime.edgetpu_device else {}
    if backend == "tensorrt":
        assert target.tensorrt is not None
        return tensorrt_options(plan_name, stage, target.tensorrt, runtime.precision, bundle_dir, manifest)
    return {}


def plan_backends(manifest: Manifest, bundle_dir: Path, requested: Optional[str] = None,
                  runtime: Optional[RuntimeConfig] = None, fine: bool = True,
                  host: Optional[HostProbe] = None) -> BackendPlan:
    """Decide, before loading anything, which artifact of which target runs on which backend. The decision and its
    reasons are logged as one INFO line; `host` (default: this machine) answers what can run here."""
    runtime = runtime or RuntimeConfig()
    host = host or live_host(runtime.edgetpu_device)
    choice: BackendChoice = choose_backend(manifest, requested, host, runtime.precision)
    log.info("%s", choice.line())
    threads, threads_source = resolve_threads(runtime)
    try:
        stages = _stage_plans(manifest, bundle_dir, choice, runtime, fine, host, threads)
    except BaseException:
        from edge_vad.backends.edgetpu_runtime import release_probed

        release_probed()  # the choice may have opened the Edge TPU for a plan that is not going to run
        raise
    if any(s.backend in ("onnxruntime", "tflite") for s in stages):
        log.info("CPU backends: %d intra-op thread(s), from the %s", threads, threads_source)
    return BackendPlan(choice.target, choice.backend, stages, choice.reasons, threads, threads_source)


def _stage_plans(manifest: Manifest, bundle_dir: Path, choice: BackendChoice, runtime: RuntimeConfig, fine: bool,
                 host: HostProbe, threads: int) -> Tuple[StagePlan, ...]:
    target_name, backend = choice.target, choice.backend
    target = manifest.targets[target_name]
    stages = []
    wanted = RUNTIME_STAGES if fine and manifest.fine is not None else RUNTIME_STAGES[:2]
    for stage in wanted:
        name = _stage_artifact(manifest, target, stage, backend)
        if name is None:
            if stage in ("coarse_backbone", "coarse_head"):
                raise EdgeVadError(f"bundle {bundle_dir}: target {target_name} has no {stage} artifact; re-export it "
                                   "from a checkpoint with a trained QACM student")
            if _fine_stage_needs(manifest, stage):
                raise EdgeVadError(f"bundle {bundle_dir}: the manifest has a fine stage but target {target_name} lists "
                                   f"no {stage} artifact; re-export the bundle")
            continue
        art = manifest.artifacts[name]
        art_backend = _artifact_backend(name, art, target, backend)
        if art_backend != backend:
            status = host.status(art_backend)
            if not status.available:
                raise MissingDependency(f"backend {art_backend!r} is unavailable: {status.reason}; {status.detail}")
        stages.append(StagePlan(stage, name, bundle_dir / art.file, art_backend,
                                _options(art_backend, name, stage, target, runtime, bundle_dir, manifest, threads)))
    return tuple(stages)
