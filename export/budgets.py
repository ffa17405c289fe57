"""Parameters and FLOPs counted from an ONNX graph, and the device budgets they are held to.

Counting rule (the same for every artifact, so the numbers compare):
- MACs (multiply-accumulates) of the ops that do the arithmetic, from shapes after onnx.shape_inference:
  * Conv:          output elements x (input channels / group) x kernel elements
  * ConvTranspose: input elements  x (output channels / group) x kernel elements (each input pixel scatters
                   one kernel's worth of products)
  * Gemm:          M x N x K
  * MatMul:        output elements x K (K = the contracted dimension; batched and broadcast MatMuls alike)
  Bias additions are not MACs.
- FLOPs = 2 x MACs. Elementwise and normalisation ops (Add, Mul, Relu, Sigmoid, Exp, Softmax, LayerNorm,
  ReduceMean, ...) are IGNORED: the convention of thop / fvcore and of the papers we compare with, and they
  are a few percent of a convolutional or transformer network's arithmetic.
- Parameters = elements of the floating-point initializers and floating-point Constant-node tensors, each
  named tensor once. Integer and boolean tensors (shapes, axes, indices) are not parameters. A
  BatchNormalization counts as the convolution bias it folds into: its shift B counts, its scale, mean and
  variance do not (the backbone graph keeps BatchNormalization; every runtime folds it before running).
- Ops with a MAC rule above whose shapes cannot be inferred are errors, never silently zero; ops that do
  arithmetic the rule does not cover (Einsum, Conv variants, recurrent ONNX ops) are listed in `uncounted_ops`.

Budgets (edge_vad.constants, from the paper): Jetson Nano 100 M parameters and 100 GFLOPs per forward
pass; Coral Edge TPU 32 MB model file (checked on .tflite artifacts, the files the Coral loads).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnx
from onnx import shape_inference

from edge_vad.constants import CORAL_MAX_MODEL_BYTES, JETSON_NANO_MAX_FLOPS, JETSON_NANO_MAX_PARAMS
from edge_vad.errors import EdgeVadError

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Arithmetic-heavy ops this counter has no rule for: listed, so a graph that uses them is never under-reported silently.
UNCOUNTED_COMPUTE_OPS = ("Einsum", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "LSTM", "GRU", "RNN",
                         "Attention", "MultiHeadAttention", "FusedMatMul", "FusedConv")
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}

ModelLike = Union[str, Path, onnx.ModelProto]


@dataclass
class GraphCount:
    params: int
    macs: int
    flops: int
    macs_by_op: dict[str, int] = field(default_factory=dict)
    uncounted_ops: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(model: ModelLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise EdgeVadError(f"ONNX model not found: {path}; export it first")
    # Shapes only: external weight data (models over 2 GB) is not needed to count.
    return onnx.load(str(path), load_external_data=False)


def _shapes(model: onnx.ModelProto) -> dict[str, Optional[list[Optional[int]]]]:
    inferred = shape_inference.infer_shapes(model, strict_mode=False)
    shapes: dict[str, Optional[list[Optional[int]]]] = {}
    graph = inferred.graph
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = list(attr.t.dims)
    return shapes


def _static(shapes: dict, name: str, node: onnx.NodeProto) -> list[int]:
    shape = shapes.get(name)
    if shape is None or any(d is None for d in shape):
        raise EdgeVadError(f"cannot count {node.op_type} node '{node.name}': shape of '{name}' is unknown or dynamic "
                           f"({shape}); export with static shapes")
    return [int(d) for d in shape]


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _node_macs(node: onnx.NodeProto, shapes: dict) -> int:
    op = node.op_type
    if op == "Conv":
        out = _static(shapes, node.output[0], node)
        weight = _static(shapes, node.input[1], node)  # [M, C/group, k...]
        return int(np.prod(out)) * int(np.prod(weight[1:]))
    if op == "ConvTranspose":
        inp = _static(shapes, node.input[0], node)
        weight = _static(shapes, node.input[1], node)  # [C, M/group, k...]
        return int(np.prod(inp)) * int(np.prod(weight[1:]))
    if op == "Gemm":
        a = _static(shapes, node.input[0], node)
        b = _static(shapes, node.input[1], node)
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * n * k
    if op == "MatMul":
        a = _static(shapes, node.input[0], node)
        out = _static(shapes, node.output[0], node)
        return int(np.prod(out)) * a[-1]
    raise AssertionError(op)


def _parameters(model: onnx.ModelProto) -> int:
    # A BatchNormalization's scale, mean and var fold into the conv before it; a tensor that is also used
    # elsewhere (exporters share equal constants, e.g. a zero shift and a zero mean) still counts.
    folded, used = set(), set()
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            (folded if node.op_type == "BatchNormalization" and i in (1, 3, 4) else used).add(name)
    folded -= used
    seen: dict[str, int] = {}
    for init in model.graph.initializer:
        if init.data_type in _FLOAT_TYPES and init.name not in folded:
            seen[init.name] = int(np.prod(init.dims)) if len(init.dims) else 1
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in _FLOAT_TYPES:
                    seen[node.output[0]] = int(np.prod(attr.t.dims)) if len(attr.t.dims) else 1
    return sum(seen.values())


def count_onnx(model: ModelLike) -> GraphCount:
    """Parameters, MACs and FLOPs of an ONNX graph by the module's rule (main graph; no subgraphs expected)."""
    proto = _load(model)
    shapes = _shapes(proto)
    by_op: Counter = Counter()
    uncounted: list[str] = []
    for node in proto.graph.node:
        if node.op_type in MAC_OPS:
            by_op[node.op_type] += _node_macs(node, shapes)
        elif node.op_type in UNCOUNTED_COMPUTE_OPS or any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            uncounted.append(f"{node.op_type}:{node.name}")
    macs = int(sum(by_op.values()))
    return GraphCount(params=_parameters(proto), macs=macs, flops=2 * macs, macs_by_op=dict(by_op),
                      uncounted_ops=uncounted)


def _check(limit: float, value: float) -> dict[str, Any]:
    return {"limit": float(limit), "value": float(value), "pass": bool(value <= limit)}


def budget_checks(params: int, flops: int, file_bytes: int, fmt: str) -> dict[str, dict[str, Any]]:
    """The paper's device budgets for one artifact: Jetson Nano (every graph), Coral (tflite files)."""
    checks = {
        "jetson_nano_params": _check(JETSON_NANO_MAX_PARAMS, params),
        "jetson_nano_flops": _check(JETSON_NANO_MAX_FLOPS, flops),
    }
    if fmt == "tflite":
        checks["coral_model_bytes"] = _check(CORAL_MAX_MODEL_BYTES, file_bytes)
    return checks


def artifact_budgets(counted_from: Path, file_path: Path, fmt: str,
                     count: Optional[GraphCount] = None, package_bytes: int = 0) -> dict[str, Any]:
    """{params, macs, flops, bytes, counted_from, checks, uncounted_ops} for the manifest.

    `counted_from` is the ONNX graph counted (for an int8 .tflite, the fp32 ONNX of the same network);
    `file_path` is the artifact whose size is recorded and held to the file-size budget; `package_bytes` are
    the weights it takes from a pip package at load time (manifest package_weights), part of the model's size.
    """
    count = count or count_onnx(counted_from)
    size = Path(file_path).stat().st_size + package_bytes
    return {
        "params": count.params, "macs": count.macs, "flops": count.flops, "bytes": size,
        "counted_from": Path(counted_from).name,
        "checks": budget_checks(count.params, count.flops, size, fmt),
        "uncounted_ops": list(count.uncounted_ops),
    }


def pipeline_budgets(parts: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """Sum of the artifacts one stage runs per frame (e.g. backbone + QACM), held to the Jetson budgets."""
    params = sum(p["params"] for p in parts)
    macs = sum(p["macs"] for p in parts)
    size = sum(p["bytes"] for p in parts)
    return {
        "params": params, "macs": macs, "flops": 2 * macs, "bytes": size, "counted_from": label,
        "checks": budget_checks(params, 2 * macs, size, "onnx"),
        "uncounted_ops": [op for p in parts for op in p.get("uncounted_ops", [])],
    }
