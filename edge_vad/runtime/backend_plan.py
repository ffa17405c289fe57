"""Which backend runs which artifact of a bundle, decided before anything loads (no torch, no model).

    plan = plan_backends(manifest, bundle_dir, requested="onnxruntime", runtime=cfg.runtime)

`choose_target` picks the (bundle target, backend) pair: the requested backend if it can run here, else the
first of AUTO_ORDER that can; `plan_backends` then names, per runtime stage, the artifact, its backend and the
backend's load options.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from edge_vad.backends import backend_status
from edge_vad.bundle.manifest import Artifact, Manifest, TargetProfile
from edge_vad.config import RuntimeConfig
from edge_vad.errors import EdgeVadError, MissingDependency
from edge_vad.runtime.trt_plan import tensorrt_options

log = logging.getLogger("edge_vad.stages")

# Automatic choice, first match wins: a GPU or an Edge TPU when present, else the fp32 reference graphs on
# onnxruntime (the most accurate on a CPU), and the int8 TFLite CPU path only where onnxruntime is missing.
AUTO_ORDER: Tuple[Tuple[str, str], ...] = (
    ("tensorrt", "tensorrt"), ("tflite-int8", "edgetpu"), ("onnx", "onnxruntime"),
    ("tensorrt", "onnxruntime"), ("tflite-int8", "tflite"),
)
TARGET_FOR_BACKEND = {"onnxruntime": "onnx", "tensorrt": "tensorrt", "tflite": "tflite-int8", "edgetpu": "tflite-int8"}
RUNTIME_STAGES = ("coarse_backbone", "coarse_head", "fine_image", "fine_head")


@dataclass(frozen=True)
class StagePlan:
    stage: str  # coarse_backbone | coarse_head | fine_image | fine_head
    artifact: str  # the manifest's artifact name
    file: Path
    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendPlan:
    target: str  # the manifest target whose artifacts run
    backend: str  # the target backend (the coarse stage runs on it)
    stages: Tuple[StagePlan, ...]

    def stage(self, name: str) -> Optional[StagePlan]:
        return next((s for s in self.stages if s.stage == name), None)


def _unavailable(name: str) -> MissingDependency:
    status = backend_status(name)  # EdgeVadError for an unknown name
    return MissingDependency(f"backend {name!r} is unavailable: {status.reason}; {status.detail}")


def choose_target(manifest: Manifest, requested: Optional[str]) -> Tuple[str, str]:
    """(target, backend): `requested` if it can run here and the bundle has a target for it, else the first of
    AUTO_ORDER that can. The backend's own availability is checked first: asking for a missing one is a
    MissingDependency naming what to install, whatever the bundle holds."""
    targets = manifest.targets
    if requested:
        if not backend_status(requested).available:
            raise _unavailable(requested)
        for name, target in targets.items():
            if requested in target.backends:
                return name, requested
        raise EdgeVadError(f"the bundle has no artifacts for backend {requested!r} (its targets: "
                           f"{', '.join(f'{n} -> {t.backends}' for n, t in targets.items())}); drop --backend or "
                           f"re-export with --targets {TARGET_FOR_BACKEND.get(requested, 'onnx')}")
    listed = list(AUTO_ORDER) + [(n, b) for n, t in targets.items() for b in t.backends]
    reasons = []
    for name, backend in listed:
        if name in targets and backend in targets[name].backends:
            status = backend_status(backend)
            if status.available:
                return name, backend
            reasons.append(f"{backend}: {status.reason}")
    raise MissingDependency(f"no backend of the bundle's targets can run here ({'; '.join(dict.fromkeys(reasons))}); "
                            "run `edge-vad models backends` to see what to install")


def _stage_artifact(manifest: Manifest, target: TargetProfile, stage: str, backend: str) -> Optional[str]:
    names = [n for n in target.artifacts if manifest.artifacts[n].stage == stage]
    prefer = "tflite" if backend in ("tflite", "edgetpu") else "onnx"
    names.sort(key=lambda n: manifest.artifacts[n].format != prefer)
    return names[0] if names else None


def _artifact_backend(name: str, art: Artifact, target: TargetProfile, backend: str) -> str:
    """The backend for one artifact: the target's where it can load it, else the host's for its format.
    The fine head is a small recurrent graph: it always runs on onnxruntime (the bundle's notes say so)."""
    if art.format == "tflite":
        return backend if backend in ("tflite", "edgetpu") else "tflite"
    if backend == "tensorrt" and art.stage != "fine_head" and target.tensorrt is not None \
            and name in target.tensorrt.onnx_artifacts:
        return "tensorrt"
    return "onnxruntime"


def _options(backend: str, plan_name: str, stage: str, target: TargetProfile, runtime: RuntimeConfig,
             bundle_dir: Path, manifest: Manifest) -> Dict[str, Any]:
    if backend == "onnxruntime":
        # used only where onnxruntime has its TensorRT execution provider (NVIDIA's Jetson wheels): it builds
        # its own engines, cached, in fp16 unless fp32 is asked for (it has no calibration for int8)
        return {"threads": runtime.threads, "tensorrt_fp16": runtime.precision != "fp32"}
    if backend == "tflite":
        return {"num_threads": runtime.threads}
    if backend == "edgetpu":
        return {"device": runtime.edgetpu_device} if runtime.edgetpu_device else {}
    if backend == "tensorrt":
        assert target.tensorrt is not None
        return tensorrt_options(plan_name, stage, target.tensorrt, runtime.precision, bundle_dir, manifest)
    return {}


def plan_backends(manifest: Manifest, bundle_dir: Path, requested: Optional[str] = None,
                  runtime: Optional[RuntimeConfig] = None, fine: bool = True) -> BackendPlan:
    """Decide, before loading anything, which artifact of which target runs on which backend."""
    runtime = runtime or RuntimeConfig()
    target_name, backend = choose_target(manifest, requested)
    target = manifest.targets[target_name]
    stages = []
    wanted = RUNTIME_STAGES if fine and manifest.fine is not None else RUNTIME_STAGES[:2]
    for stage in wanted:
        name = _stage_artifact(manifest, target, stage, backend)
        if name is None:
            if stage in ("coarse_backbone", "coarse_head"):
                raise EdgeVadError(f"bundle {bundle_dir}: target {target_name} has no {stage} artifact; re-export it "
                                   "from a checkpoint with a trained QACM student")
            if stage == "fine_head" or manifest.fine.image_input == "clip_visual":  # type: ignore[union-attr]
                raise EdgeVadError(f"bundle {bundle_dir}: the manifest has a fine stage but target {target_name} lists "
                                   f"no {stage} artifact; re-export the bundle")
            continue
        art = manifest.artifacts[name]
        art_backend = _artifact_backend(name, art, target, backend)
        if art_backend != backend and not backend_status(art_backend).available:
            raise _unavailable(art_backend)
        stages.append(StagePlan(stage, name, bundle_dir / art.file, art_backend,
                                _options(art_backend, name, stage, target, runtime, bundle_dir, manifest)))
    return BackendPlan(target_name, backend, tuple(stages))
