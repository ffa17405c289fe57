"""The `tensorrt` target's record: reference samples (a few real frames and QACM windows with the ONNX graphs'
outputs) that an engine built on the device must reproduce, the opset and the oldest TensorRT that parses it.

The reference inputs go through the runtime's own preprocessing (edge_vad.runtime.trt_plan) and the outputs come
from onnxruntime running the graphs the device loads, so the device compares its engine with exactly what the
onnxruntime backend would compute on the same frames (docs/jetson.md, "Reference check").
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from edge_vad.backends.engine_check import DEFAULT_TOLERANCES
from edge_vad_export.export_plan import FILES
from edge_vad_export.export_work import ExportWork, resized_rgb

FRAMES_KEY = "frames"


def _ort_outputs(path: Any, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    from edge_vad_export.parity import OrtRunner

    runner = OrtRunner(path)
    outs = [runner.run(f) for f in feeds]
    return {name: np.stack([o[name] for o in outs]).astype(np.float32) for name in runner.output_names}


def write_reference(work: ExportWork, frames_bgr: Sequence[np.ndarray], preprocess: Any,
                    qacm_windows: Optional[np.ndarray], note: str) -> dict[str, Any]:
    """Write tensorrt_reference.npz into the bundle; return the manifest's `reference` record."""
    from edge_vad.bundle.manifest import Preprocessing
    from edge_vad.runtime.trt_plan import frames_as_inputs
    from edge_vad_export.onnx_export import save_npz

    writer, arts = work.writer, work.writer.artifacts
    arrays: dict[str, np.ndarray] = {FRAMES_KEY: np.stack([resized_rgb(f, preprocess) for f in frames_bgr])}
    graphs: dict[str, Any] = {}

    # coarse_backbone: the frames, normalised exactly as the runtime normalises live frames
    image = arts["coarse_backbone"]["inputs"][0]
    pre = Preprocessing(size=preprocess.size, mean=list(preprocess.mean), std=list(preprocess.std),
                        pixel_format=preprocess.pixel_format, resize="", interpolation=preprocess.interpolation)
    images = frames_as_inputs(arrays[FRAMES_KEY], pre, image["shape"])
    outputs = _ort_outputs(work.backbone_onnx, [{image["name"]: x} for x in images])
    graphs["coarse_backbone"] = {"inputs": {image["name"]: {"key": FRAMES_KEY, "preprocess": "coarse"}},
                                 "outputs": {}}
    for name, value in outputs.items():
        arrays[f"coarse_backbone/{name}"] = value
        graphs["coarse_backbone"]["outputs"][name] = f"coarse_backbone/{name}"

    # qacm: feature windows made from those frames' features (the export's parity windows)
    if qacm_windows is not None and "qacm" in arts:
        feat = arts["qacm"]["inputs"][0]
        windows = np.asarray(qacm_windows, np.float32).reshape((len(qacm_windows), *feat["shape"]))
        arrays[f"qacm/{feat['name']}"] = windows
        outputs = _ort_outputs(writer.path(FILES["qacm"]), [{feat["name"]: w} for w in windows])
        graphs["qacm"] = {"inputs": {feat["name"]: {"key": f"qacm/{feat['name']}"}},
                          "outputs": {n: f"qacm/{n}" for n in outputs}, "score_outputs": list(outputs)}
        for name, value in outputs.items():
            arrays[f"qacm/{name}"] = value

    save_npz(arrays, writer.path(FILES["tensorrt_reference"]))
    writer.add("tensorrt_reference", FILES["tensorrt_reference"], "reference", "npz", "fp32",
               layout="frames: [n, size, size, 3] uint8 RGB resized as `preprocessing`; <graph>/<tensor>: [n, *shape]",
               conversion={"frames": len(frames_bgr), "source": note})
    return {"artifact": "tensorrt_reference", "graphs": graphs, "tolerances": DEFAULT_TOLERANCES,
            "source": f"{len(frames_bgr)} {note}; outputs of the ONNX graphs on onnxruntime (CPU)"}
