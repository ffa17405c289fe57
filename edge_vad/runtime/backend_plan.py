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

import numpy as np

from edge_vad.backends import backend_status
from edge_vad.bundle.manifest import Artifact, Manifest, TargetProfile
from edge_vad.config import RuntimeConfig
from edge_vad.errors import EdgeVadError, MissingDependency
from edge_vad.runtime.threads import resolve_threads

log = logging.getLogger("edge_vad.stages")

# Automatic choice, first match wins: a GPU or an Edge TPU when present, else the fp32 reference graphs on
# onnxruntime (the most accurate on a CPU), and the int8 TFLite CPU path only where onnxruntime is missing.
AUTO_ORDER: Tuple[Tuple[str, str], ...] = (
    ("tensorrt", "tensorrt"), ("tflite-int8", "edgetpu"), ("onnx", "onnxruntime"),
    ("tensorrt", "onnxruntime"), ("tflite-int8", "tflite"),
)
TARGET_FOR_BACKEND = {"onnxruntime": "onnx", "tensorrt": "tensorrt", "tflite": "tflite-int8", "edgetpu": "tflite-int8"}
TRT_CALIBRATION_BATCH = 8  # frames per TensorRT int8 calibration batch (64 shipped frames -> 8 batches)
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
    threads: int = 1  # intra-op threads of the CPU backends (edge_vad.runtime.threads)
    threads_source: str = ""  # where that number comes from

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


def _calibration(bundle_dir: Path, manifest: Manifest, name: str) -> Any:
    """int8 TensorRT calibration batches from the bundle's uint8 RGB frames, normalised like live frames."""
    from edge_vad.backends.tensorrt_backend import CalibrationBatcher
    from edge_vad.runtime.preprocess import normalise

    data = np.load(bundle_dir / manifest.artifacts[name].file, allow_pickle=False)
    frames = (np.ascontiguousarray(normalise(f, manifest.preprocessing).transpose(2, 0, 1)) for f in data)
    return CalibrationBatcher(frames, TRT_CALIBRATION_BATCH, (3, manifest.preprocessing.size, manifest.preprocessing.size))


def _options(backend: str, plan_name: str, stage: str, target: TargetProfile, runtime: RuntimeConfig,
             bundle_dir: Path, manifest: Manifest, threads: int) -> Dict[str, Any]:
    if backend == "onnxruntime":
        return {"threads": threads}
    if backend == "tflite":
        return {"num_threads": threads}
    if backend == "edgetpu":
        return {"device": runtime.edgetpu_device} if runtime.edgetpu_device else {}
    if backend == "tensorrt":
        assert target.tensorrt is not None
        precision = target.tensorrt.precision
        if precision == "int8":
            calib = target.tensorrt.calibration_artifact
            if stage == "coarse_backbone" and calib:
                return {"precision": "int8", "calibration": _calibration(bundle_dir, manifest, calib)}
            # the shipped calibration frames are images: only the image graph can be calibrated with them
            log.info("tensorrt: %s has no int8 calibration data of its own; building it in fp16", plan_name)
            precision = "fp16"
        return {"precision": precision}
    return {}


def plan_backends(manifest: Manifest, bundle_dir: Path, requested: Optional[str] = None,
                  runtime: Optional[RuntimeConfig] = None, fine: bool = True) -> BackendPlan:
    """Decide, before loading anything, which artifact of which target runs on which backend."""
    runtime = runtime or RuntimeConfig()
    threads, threads_source = resolve_threads(runtime)
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
                                _options(art_backend, name, stage, target, runtime, bundle_dir, manifest, threads)))
    if any(s.backend in ("onnxruntime", "tflite") for s in stages):
        log.info("CPU backends: %d intra-op thread(s), from the %s", threads, threads_source)
    return BackendPlan(target_name, backend, tuple(stages), threads, threads_source)
