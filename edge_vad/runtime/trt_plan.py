"""TensorRT load options for one bundle graph: precision, int8 calibration batches, the reference samples a new
engine must reproduce, and the oldest TensorRT that parses the bundle (docs/jetson.md).

Precision: the config's [runtime] precision / --precision when given, else the bundle's default (fp16). int8
needs the bundle's calibration frames, which are camera images: only the image graph (coarse_backbone) is
calibrated; the small QACM head is then built in fp16 (it is a few hundred kFLOPs; int8 would gain nothing).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edge_vad.bundle.manifest import Manifest, Preprocessing, TensorRTBuild
from edge_vad.errors import EdgeVadError

log = logging.getLogger("edge_vad.stages")

PRECISIONS = ("fp32", "fp16", "int8")
CALIBRATED_STAGES = ("coarse_backbone",)  # the calibration frames are camera images: the image graph only


def engine_precision(requested: Optional[str], build: TensorRTBuild, name: str, stage: str) -> str:
    """The precision `name` is built at; one EdgeVadError line where the bundle cannot give what was asked."""
    precision = requested or build.precision
    if precision not in PRECISIONS:
        raise EdgeVadError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        if not build.calibration_artifact:
            raise EdgeVadError("precision int8 needs the bundle's calibration frames and this bundle has none; "
                               "re-export it with --calib DIR, or use --precision fp16")
        if stage not in CALIBRATED_STAGES:
            log.info("tensorrt: %s has no int8 calibration data of its own; building it in fp16", name)
            return "fp16"
    return precision


def frames_as_inputs(frames: np.ndarray, pre: Preprocessing, shape: List[int]) -> np.ndarray:
    """uint8 RGB [n, size, size, 3] -> float32 [n, *shape] the way live frames are fed (normalise, NHWC -> NCHW)."""
    from edge_vad.runtime.preprocess import normalise

    out = np.stack([normalise(f, pre).transpose(2, 0, 1) for f in frames]).astype(np.float32)
    return out.reshape((len(frames), *shape))


def calibration_batcher(bundle_dir: Path, manifest: Manifest, build: TensorRTBuild, name: str) -> Any:
    """Batches of the bundle's calibration frames with the engine input's own shape ([1, 3, 224, 224]: batch 1)."""
    from edge_vad.backends.trt_calibration import CalibrationBatcher

    assert build.calibration_artifact is not None
    shape = [int(d) for d in manifest.artifacts[name].inputs[0].shape]
    data = np.load(bundle_dir / manifest.artifacts[build.calibration_artifact].file, allow_pickle=False)
    frames = (np.ascontiguousarray(frames_as_inputs(f[None], manifest.preprocessing, shape)[0][0]) for f in data)
    return CalibrationBatcher(frames, shape[0], shape[1:])


def engine_reference(bundle_dir: Path, manifest: Manifest, build: TensorRTBuild, name: str) -> Any:
    """The EngineReference of graph `name`, or None where the bundle has none (older bundles)."""
    from edge_vad.backends.engine_check import EngineReference

    info = build.reference
    if info is None or name not in info.graphs:
        return None
    graph = info.graphs[name]
    art = manifest.artifacts[name]
    shapes = {t.name: list(t.shape) for t in art.inputs}
    with np.load(bundle_dir / manifest.artifacts[info.artifact].file, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    inputs: Dict[str, np.ndarray] = {}
    for tensor, source in graph.inputs.items():
        if tensor not in shapes or source.key not in arrays:
            raise EdgeVadError(f"bundle {bundle_dir}: the TensorRT reference of {name} names {tensor} / {source.key}, "
                               "which the bundle lacks; re-export the bundle")
        raw = arrays[source.key]
        if source.preprocess is not None:
            pre = manifest.preprocessing if source.preprocess == "coarse" else (manifest.fine.preprocessing
                                                                               if manifest.fine else None)
            if pre is None:
                raise EdgeVadError(f"bundle {bundle_dir}: no {source.preprocess} preprocessing for the reference of "
                                   f"{name}; re-export the bundle")
            raw = frames_as_inputs(raw, pre, shapes[tensor])
        inputs[tensor] = np.asarray(raw, np.float32)
    count = {len(v) for v in inputs.values()} | {len(arrays[k]) for k in graph.outputs.values()}
    if len(count) != 1:
        raise EdgeVadError(f"bundle {bundle_dir}: the TensorRT reference of {name} has unequal sample counts; "
                           "re-export the bundle")
    n = count.pop()
    feeds = [{t: v[i] for t, v in inputs.items()} for i in range(n)]
    expected = [{t: arrays[k][i] for t, k in graph.outputs.items()} for i in range(n)]
    return EngineReference(art.file, feeds, expected, dict(info.tolerances), tuple(graph.score_outputs))


def tensorrt_options(name: str, stage: str, build: TensorRTBuild, requested: Optional[str], bundle_dir: Path,
                     manifest: Manifest) -> Dict[str, Any]:
    precision = engine_precision(requested, build, name, stage)
    options: Dict[str, Any] = {"precision": precision}
    if precision == "int8":
        options["calibration"] = calibration_batcher(bundle_dir, manifest, build, name)
    reference = engine_reference(bundle_dir, manifest, build, name)
    if reference is not None:
        options["reference"] = reference
    if build.min_tensorrt:
        options["min_version"] = build.min_tensorrt
    return options
