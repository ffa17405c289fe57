"""PyTorch -> ONNX for every network of the bundle (TorchScript exporter, static batch 1).

Opsets (docs/jetson.md, "Opset policy"): the coarse graphs TensorRT builds on the device (coarse_backbone,
qacm) are exported at TENSORRT_OPSET = 13, the newest opset the ONNX parser of TensorRT 8.0 / 8.2 (JetPack
4.6.x) reads according to onnx-tensorrt's docs/operators.md of those releases; clip_visual needs opset 14
(scaled_dot_product_attention), so a clip-vit-b16 bundle needs TensorRT 8.4 (JetPack 5); the graphs only
onnxruntime runs (teacher_step, fine_head, which use opset 17's LayerNormalization) stay at OPSET = 17.
Each graph is exported with `torch.onnx.export(dynamo=False, opset_version=...)`, then optimised OFFLINE by
onnxruntime at its BASIC level (constant folding, Pad-into-Conv and similar fusions that produce standard
ONNX ops only) and saved. Without that pass, EfficientNet-Lite0's static TF-"same" pads export as
ConstantOfShape/Concat/Slice/Transpose subgraphs that shape inference cannot see through; after it, the
backbone is Conv/BatchNormalization/Clip/Add/ReduceMean/ConvTranspose/Gemm only. The backbone keeps its
BatchNormalization nodes (not folded into the convolutions at export): its initializers then stay
byte-for-byte the tensors of the ImageNet weights package, which the bundle references instead of copying
(export/package_weights.py). onnxruntime and TensorRT fold them at load time, so the device runs the same
fused graph. Every graph is then checked: onnx.checker,
only the default ONNX domain, no dynamic-shape ops (Shape, Size, NonZero, ConstantOfShape), and fully
static input/output shapes.

Graphs (names are the manifest's artifact names):
- coarse_backbone: image [1,3,224,224] (normalised) -> feature, heatmap, trunk_feature (every frame)
- fine_describer:  trunk_feature [1,C] -> imagenet_logits [1,1000]: the backbone's own ImageNet classifier, run
                   only on the frames the fine stage reads (their description ids, lite0-minilm)
- qacm:            features [1,W,D] -> logit [1]
- fine_head:       frame_feature [1,F], state -> video_feature [1,D] (L2-normalised), state_out; ONE RWKV step
- teacher_step:    feature [1,D], state -> logit [1], state_out; one AFED step (bench / explain)
- clip_visual:     image [1,3,S,S] (CLIP-normalised) -> embedding [1,E] (L2-normalised)
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_vad.errors import EdgeVadError

log = logging.getLogger(__name__)

OPSET = 17  # graphs onnxruntime runs (LayerNormalization is an opset-17 op)
TENSORRT_OPSET = 13  # coarse graphs TensorRT builds: the newest opset TensorRT 8.0 / 8.2 (JetPack 4.6.x) parse
# CLIP's attention exports as scaled_dot_product_attention from opset 14 on; below 17 LayerNormalization still
# decomposes, which matters because TensorRT 8.4 / 8.5 list LayerNormalization as unsupported.
CLIP_TENSORRT_OPSET = 14
# The oldest TensorRT whose ONNX parser reads an opset (onnx-tensorrt docs/operators.md per release:
# 8.0 and 8.2 "up to Opset 13", 8.4 to 8.6 "up to Opset 17", 10.0 "opset 9 to opset 20"); docs/jetson.md.
MIN_TENSORRT_FOR_OPSET = {13: "8.0", 14: "8.4", 17: "8.4", 20: "10.0"}
DYNAMIC_SHAPE_OPS = ("Shape", "Size", "NonZero", "ConstantOfShape")
BACKBONE_OUTPUTS = ("feature", "heatmap", "trunk_feature")  # per frame; the classifier is fine_describer
# onnxruntime's fusions that rewrite convolution weights (keep_batchnorm switches them off for the offline pass)
BATCHNORM_FUSIONS = ("ConvBNFusion", "ConvMulFusion", "ConvAddFusion")

_ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT64: "int64",
                onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
                onnx.TensorProto.BOOL: "bool", onnx.TensorProto.DOUBLE: "float64"}


# --------------------------------------------------------------------------------------------------------
# Export wrappers: the device-side forms of the networks, as flat tensors in and out
# --------------------------------------------------------------------------------------------------------


class PerFrameBackbone(nn.Module):
    """The backbone as the device runs it on every frame: AdjustMobileNet.per_frame_outputs (no classifier)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.backbone.per_frame_outputs(image)


class QacmWindow(nn.Module):
    """QACM on-device form: the last W features [1, W, D] -> the last frame's logit [1]."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student

    def forward(self, features: Tensor) -> Tensor:
        return self.student.forward_window(features)


class FineHeadStep(nn.Module):
    """The fine head for the device: frame feature -> in_proj -> ONE RWKV step -> out_proj -> L2 norm.

    Exactly FineStage.video_features, one frame at a time, with the RWKV state explicit.
    """

    def __init__(self, in_proj: nn.Module, rwkv: nn.Module, out_proj: nn.Module):
        super().__init__()
        self.in_proj, self.rwkv, self.out_proj = in_proj, rwkv, out_proj

    @classmethod
    def from_stage(cls, stage: nn.Module) -> "FineHeadStep":
        return cls(stage.in_proj, stage.rwkv, stage.out_proj)

    def forward(self, frame_feature: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        y, state_out = self.rwkv.step(self.in_proj(frame_feature), state)
        return F.normalize(self.out_proj(y), dim=-1), state_out


class TeacherStep(nn.Module):
    """AFED teacher, one recurrent step: (feature [1, D], state) -> (logit [1], state_out)."""

    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.teacher = teacher

    def forward(self, feature: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return self.teacher.step(feature, state)


class ClipVisual(nn.Module):
    """CLIP image tower: normalised pixels [1, 3, S, S] -> L2-normalised embedding [1, E]."""

    def __init__(self, image_encoder: nn.Module):
        super().__init__()
        self.encoder = image_encoder

    def forward(self, image: Tensor) -> Tensor:
        return self.encoder.encode(image)


# --------------------------------------------------------------------------------------------------------
# Export + offline optimisation + checks
# --------------------------------------------------------------------------------------------------------


@dataclass
class OnnxGraph:
    """One exported graph: where it is and its I/O as the file declares it."""

    path: Path
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    op_histogram: dict[str, int]

    keep_batchnorm: bool = False
    opset: int = OPSET

    def conversion(self) -> dict[str, Any]:
        optimisation = "onnxruntime ORT_ENABLE_BASIC, offline"
        if self.keep_batchnorm:
            optimisation += f", without {', '.join(BATCHNORM_FUSIONS)} (folded at load time instead)"
        return {"exporter": "torch.onnx.export (TorchScript, dynamo=False)", "opset": self.opset,
                "optimisation": optimisation, "op_histogram": self.op_histogram}


def _layout(shape: Sequence[int], name: str) -> str:
    if name in ("state", "state_out"):
        return "state"
    return {1: "N", 2: "NC", 3: "NTC", 4: "NCHW"}.get(len(shape), "")


def _io(values: Sequence[onnx.ValueInfoProto]) -> list[dict[str, Any]]:
    out = []
    for vi in values:
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if any(d is None or d < 1 for d in shape):
            raise EdgeVadError(f"ONNX tensor '{vi.name}' has a dynamic shape {shape}; export with static batch 1")
        out.append({"name": vi.name, "shape": shape, "dtype": _ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)),
                    "layout": _layout(shape, vi.name)})
    return out


def _optimise_offline(src: Path, dst: Path, keep_batchnorm: bool = False) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(dst)
    opts.intra_op_num_threads = 1
    disabled = list(BATCHNORM_FUSIONS) if keep_batchnorm else []
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    # onnxruntime lists every domain it knows in the saved model; keep only those nodes use.
    model = onnx.load(str(dst))
    used = {n.domain for n in model.graph.node}
    keep = [o for o in model.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.save(model, str(dst))


def check_graph(model: onnx.ModelProto, name: str) -> None:
    """Refuse graphs a device runtime cannot take as they are (non-standard ops, dynamic shapes)."""
    onnx.checker.check_model(model)
    foreign = sorted({f"{n.domain}:{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise EdgeVadError(f"{name}: the ONNX graph uses non-standard ops {foreign}; re-export without them")
    dynamic = sorted({n.op_type for n in model.graph.node if n.op_type in DYNAMIC_SHAPE_OPS})
    if dynamic:
        raise EdgeVadError(f"{name}: the ONNX graph still computes shapes at run time ({', '.join(dynamic)}); "
                           "build the network with static sizes (e.g. Lite0 with a fixed image_size)")


def export_onnx(module: nn.Module, args: tuple[Tensor, ...], path: Path | str, input_names: Sequence[str],
                output_names: Sequence[str], keep_batchnorm: bool = False, opset: int = OPSET) -> OnnxGraph:
    """Export `module(*args)` to `path` (at `opset`, static shapes), optimise offline, check, describe.

    keep_batchnorm: leave BatchNormalization nodes unfolded, so that weight initializers keep the bytes of the
    module's parameters (TrainingMode.PRESERVE on an eval-mode module exports inference BatchNormalization)."""
    training = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    path = Path(path)
    module = module.eval()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with tempfile.TemporaryDirectory(prefix="edge-vad-onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        try:
            # nn.MultiheadAttention's inference fast path (aten::_native_multi_head_attention, taken under no_grad
            # in eval mode) has no ONNX symbolic; the regular path exports as MatMul / Softmax.
            torch.backends.mha.set_fastpath_enabled(False)
            with torch.no_grad(), warnings.catch_warnings():
                # TracerWarnings about Python ints taken from static shapes are expected (batch 1, fixed sizes).
                warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
                warnings.simplefilter("ignore", category=UserWarning)
                warnings.simplefilter("ignore", category=DeprecationWarning)  # we choose the TorchScript exporter
                torch.onnx.export(module, args, str(raw), dynamo=False, opset_version=opset, do_constant_folding=True,
                                  training=training, input_names=list(input_names), output_names=list(output_names))
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        _optimise_offline(raw, path, keep_batchnorm)
    model = onnx.load(str(path))
    check_graph(model, path.name)
    hist: dict[str, int] = {}
    for node in model.graph.node:
        hist[node.op_type] = hist.get(node.op_type, 0) + 1
    graph = OnnxGraph(path, _io(model.graph.input), _io(model.graph.output), dict(sorted(hist.items())),
                      keep_batchnorm, opset)
    if [i["name"] for i in graph.inputs] != list(input_names) or [o["name"] for o in graph.outputs] != list(output_names):
        raise EdgeVadError(f"{path.name}: exported I/O {[i['name'] for i in graph.inputs]} -> "
                           f"{[o['name'] for o in graph.outputs]} differs from the requested names")
    log.info("exported %s: %s", path.name, graph.op_histogram)
    return graph


# --------------------------------------------------------------------------------------------------------
# The bundle's graphs
# --------------------------------------------------------------------------------------------------------


def export_coarse_backbone(backbone: nn.Module, path: Path | str) -> OnnxGraph:
    size = backbone.preprocess.size
    graph = export_onnx(PerFrameBackbone(backbone), (torch.zeros(1, 3, size, size),), path, ["image"],
                        list(BACKBONE_OUTPUTS), keep_batchnorm=True, opset=TENSORRT_OPSET)
    # The backbone must be pure convolution arithmetic for TensorRT and for the int8 path (DESIGN.md trap 3).
    if "Gather" in graph.op_histogram:
        raise EdgeVadError(f"{Path(path).name}: the backbone graph has Gather ops (dynamic padding?); "
                           "build the backbone with a fixed image size")
    graph.inputs[0]["layout"] = "NCHW"
    return graph


def export_fine_describer(backbone: nn.Module, path: Path | str) -> OnnxGraph:
    """The backbone's ImageNet classifier on one pooled trunk feature (Gemm; its weights are the package's)."""
    return export_onnx(backbone.classifier, (torch.zeros(1, backbone.spec.trunk_channels),), path, ["trunk_feature"],
                       ["imagenet_logits"])


def export_qacm(student: nn.Module, path: Path | str) -> OnnxGraph:
    example = torch.zeros(1, student.window, student.in_dim)
    return export_onnx(QacmWindow(student), (example,), path, ["features"], ["logit"], opset=TENSORRT_OPSET)


def export_fine_head(head: FineHeadStep, path: Path | str) -> OnnxGraph:
    feature_dim = head.in_proj.in_features
    state = head.rwkv.init_state(1)
    return export_onnx(head, (torch.zeros(1, feature_dim), state), path, ["frame_feature", "state"],
                       ["video_feature", "state_out"])


def export_teacher_step(teacher: nn.Module, path: Path | str) -> OnnxGraph:
    state = teacher.init_state(1)
    return export_onnx(TeacherStep(teacher), (torch.zeros(1, teacher.in_dim), state), path, ["feature", "state"],
                       ["logit", "state_out"])


def export_clip_visual(image_encoder: nn.Module, path: Path | str) -> OnnxGraph:
    size = int(image_encoder.image_size)
    return export_onnx(ClipVisual(image_encoder), (torch.zeros(1, 3, size, size),), path, ["image"], ["embedding"],
                       opset=CLIP_TENSORRT_OPSET)


def save_npy(array: np.ndarray, path: Path | str) -> Path:
    """np.save without pickles (allow_pickle=False), so the runtime can load with allow_pickle=False."""
    path = Path(path)
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return path


def save_npz(arrays: dict[str, np.ndarray], path: Path | str) -> Path:
    """Several arrays in one compressed .npz, no pickles (the runtime loads it with allow_pickle=False)."""
    path = Path(path)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return path


def rwkv_state_info(rwkv: nn.Module, input_name: str = "state", output_name: str = "state_out") -> dict[str, Any]:
    """The manifest's recurrent_state entry for an EnhancedRWKV's single state tensor."""
    from edge_vad_models.rwkv import EMPTY_EXP, STATE_LAYOUT, STATE_ROWS

    state = rwkv.init_state(1)
    initial = {row: float(state[0, i, 0, 0]) for i, row in enumerate(STATE_ROWS)}
    assert initial["max_exp"] == float(np.float32(EMPTY_EXP))
    return {"input": input_name, "output": output_name, "shape": list(state.shape), "layout": STATE_LAYOUT,
            "rows": list(STATE_ROWS), "initial": initial}
