"""Tiny ONNX graphs for backend tests: y = x @ W + b (dynamic or static batch) and a QDQ graph with int8 I/O.
Building them needs onnx (the export extra); `need_onnx` skips with the reason where it is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

try:  # building test models needs onnx (the export extra); tests without a model run regardless
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    onnx = None

RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3)).astype(np.float32)
B = RNG.normal(size=(3,)).astype(np.float32)
SX, ZX, SY, ZY = 0.05, 128, 0.1, -3  # uint8 input, int8 output of the QDQ graph


def has_module(module: str) -> bool:
    """Whether `module` is importable here, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def need_onnx() -> None:
    if onnx is None:
        pytest.skip("building test models needs onnx (pip install 'edge-vad[export]')")


def save_graph(graph: "onnx.GraphProto", path: Path) -> Path:
    need_onnx()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def matmul_onnx_file(path: Path, batch: object = "N") -> Path:
    """y = x @ W + b; `batch` "N" is a dynamic batch dimension, an int a static one (TensorRT builds static shapes)."""
    need_onnx()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "matmul_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )
    return save_graph(graph, path)


def quant_onnx_file(path: Path) -> Path:
    """uint8 x -> DequantizeLinear -> MatMul W -> QuantizeLinear -> int8 y (a QDQ model with int8 I/O)."""
    need_onnx()
    inits = [numpy_helper.from_array(W, "W"),
             numpy_helper.from_array(np.array(SX, np.float32), "sx"), numpy_helper.from_array(np.array(ZX, np.uint8), "zx"),
             numpy_helper.from_array(np.array(SY, np.float32), "sy"), numpy_helper.from_array(np.array(ZY, np.int8), "zy")]
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
         helper.make_node("MatMul", ["xf", "W"], ["yf"]),
         helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"])],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [2, 3])],
        inits,
    )
    return save_graph(graph, path)
