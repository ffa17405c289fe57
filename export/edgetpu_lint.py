"""EdgeTPU lint: check a .tflite FILE against the Edge TPU's documented model requirements.

No Edge TPU compiler is needed (it is an x86 Debian package from Coral's own apt repository):
this reads the flatbuffer and applies the rules Coral documents, so an export can be rejected
before it reaches a device. It does not replace `edgetpu_compiler`; it catches what the docs say
the compiler will refuse or leave on the CPU.

Source of the rules: Coral, "TensorFlow models on the Edge TPU",
https://coral.ai/docs/edgetpu/models-intro/ - section "Model requirements" (8-bit quantised
tensors, static sizes, constant parameters, only the 3 innermost dimensions may exceed 1) and the
table "Supported operations" (operation, runtime version required, known limitations),
transcribed below as data. Release notes of google-coral/edgetpu (CHANGES.md) confirm the
runtime-13 additions (ExpandDims, Pack, Quantize, Sum, TransposeConv).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edge_vad_export.tflite_model import OpInfo, PathOrBytes, TfliteModel, read_tflite

DEFAULT_RUNTIME = 14  # latest Edge TPU runtime (libedgetpu 16.0); the table's newest "Runtime version" column
SOFTMAX_MAX_ELEMENTS = 16000  # Softmax limitation in the supported-operations table
MEAN_Z_MULTIPLE = 4  # Mean limitation (runtime >= 13): a z (channel) reduction needs z % 4 == 0
MAX_OUTER_DIMS = 3  # "only the 3 innermost dimensions may have a size greater than 1"

# Coral's "Supported operations" table, keyed by TFLite builtin name:
# name -> (first runtime version that supports it (0 = all), documented limitation in short).
# Limitations are those listed for the newest runtime (14); the checks below apply them as such.
EDGETPU_OPS: dict[str, tuple[int, str]] = {
    "ADD": (0, ""),
    "AVERAGE_POOL_2D": (0, "no fused activation function"),
    "CONCATENATION": (0, "no fused activation function; a constant input must be all zeros and the only other input"),
    "CONV_2D": (0, "same dilation in x and y"),
    "DEPTHWISE_CONV_2D": (0, "same dilation in x and y"),
    "DEQUANTIZE": (13, "only as the model's last operator (output tensor)"),
    "EXPAND_DIMS": (13, ""),
    "FULLY_CONNECTED": (0, "default weights format only; output is one-dimensional"),
    "L2_NORMALIZATION": (0, ""),
    "LOGISTIC": (0, ""),
    "LSTM": (14, "unidirectional LSTM only"),
    "MAXIMUM": (0, ""),
    "MAX_POOL_2D": (0, "no fused activation function"),
    "MEAN": (0, "no reduction in the batch dimension; a z-reduction needs z a multiple of 4"),
    "MINIMUM": (0, ""),
    "MUL": (0, ""),
    "PACK": (13, "no packing in the batch dimension"),
    "PAD": (0, "no padding in the batch dimension"),
    "PRELU": (13, "alpha must be constant"),
    "QUANTIZE": (13, ""),
    "REDUCE_MAX": (14, "not on the batch dimension"),
    "REDUCE_MIN": (14, "not on the batch dimension"),
    "RELU": (0, ""),
    "RELU6": (0, ""),
    "RELU_N1_TO_1": (0, ""),
    "RESHAPE": (0, "may stay on the CPU for large tensors"),
    "RESIZE_BILINEAR": (0, "3-D input/output; may stay on the CPU to avoid precision loss"),
    "RESIZE_NEAREST_NEIGHBOR": (0, "3-D input/output; may stay on the CPU to avoid precision loss"),
    "RSQRT": (14, ""),
    "SLICE": (0, ""),
    "SOFTMAX": (0, "1-D input of at most 16,000 elements"),
    "SPACE_TO_DEPTH": (0, ""),
    "SPLIT": (0, "no splitting in the batch dimension"),
    "SQUARED_DIFFERENCE": (14, ""),
    "SQUEEZE": (0, ""),
    "STRIDED_SLICE": (0, ""),
    "SUB": (0, ""),
    "SUM": (13, "not on the batch dimension"),
    "TANH": (0, ""),
    "TRANSPOSE": (14, ""),
    "TRANSPOSE_CONV": (13, ""),
}

_QUANTISED_ACTIVATION_TYPES = ("int8", "uint8")
_PARAMETER_TYPES = ("int32", "int64")  # biases (quantised int32) and shape / axis / padding constants
_WEIGHT_BEARING = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "TRANSPOSE_CONV": (0, 1, 3)}

# Per-op status, most severe first; an op's status is its most severe finding.
STATUSES = ("unsupported_op", "float_tensor", "not_int8", "dynamic_shape", "shape", "limitation", "ok")


@dataclass
class OpLint:
    index: int
    opcode: str
    status: str  # one of STATUSES
    reasons: list[str] = field(default_factory=list)


@dataclass
class LintReport:
    """What the lint found; `to_dict()` is JSON-ready for a bundle manifest."""

    source: str
    passed: bool
    target_runtime: int
    ops: list[OpLint]
    model_issues: list[str]
    op_histogram: dict[str, int]
    int8_io: bool  # every model input and output is int8/uint8 (the device feeds quantised frames)

    def failures(self) -> list[OpLint]:
        return [op for op in self.ops if op.status != "ok"]

    def summary(self) -> str:
        """One line: PASS, or FAIL with the first few problems named."""
        if self.passed:
            return f"EdgeTPU lint PASS: {len(self.ops)} ops, all supported and int8 (runtime >= {self.target_runtime})"
        bad = [f"op {o.index} {o.opcode}: {o.reasons[0]}" for o in self.failures()[:3]]
        more = len(self.failures()) - len(bad)
        parts = self.model_issues[:2] + bad + ([f"... {more} more ops"] if more > 0 else [])
        return "EdgeTPU lint FAIL: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _short(name: str, keep: int = 48) -> str:
    """Converter tensor names run to kilobytes (module paths); keep their tail for messages."""
    return name if len(name) <= keep else "..." + name[-(keep - 3):]


def _is_float(dtype: str) -> bool:
    return dtype.startswith("float") or dtype == "bfloat16"


def _outer_dims_ok(shape: tuple[int, ...]) -> bool:
    return all(d == 1 for d in shape[:-MAX_OUTER_DIMS])


def _norm_axes(axes: Optional[np.ndarray], rank: int) -> Optional[list[int]]:
    if axes is None:
        return None
    return sorted({int(a) % rank for a in np.atleast_1d(axes).tolist()}) if rank else []


def _tensor_findings(model: TfliteModel, op: OpInfo) -> list[tuple[str, str]]:
    """(status, reason) for the tensors an op reads and writes."""
    found: list[tuple[str, str]] = []
    model_inputs, model_outputs = set(model.inputs), set(model.outputs)
    for role, indices in (("input", op.inputs), ("output", op.outputs)):
        for i in indices:
            if i < 0:
                continue
            t = model.tensors[i]
            # Float edges are allowed only where the docs allow them: QUANTIZE of a model input,
            # DEQUANTIZE into a model output (those two ops then run on the CPU).
            edge_ok = (op.opcode == "QUANTIZE" and role == "input" and i in model_inputs) or (
                op.opcode == "DEQUANTIZE" and role == "output" and i in model_outputs)
            if _is_float(t.dtype) and not edge_ok:
                found.append(("float_tensor", f"{role} tensor {i} '{_short(t.name)}' is {t.dtype}; the Edge TPU runs int8/uint8 only"))
            elif not _is_float(t.dtype):
                if t.constant:
                    if t.dtype in _QUANTISED_ACTIVATION_TYPES and not t.quantized:
                        found.append(("not_int8", f"constant {i} '{_short(t.name)}' is {t.dtype} without quantisation parameters"))
                    elif t.dtype not in _QUANTISED_ACTIVATION_TYPES + _PARAMETER_TYPES:
                        found.append(("not_int8", f"constant {i} '{_short(t.name)}' is {t.dtype}; expected int8/uint8 weights or int32 parameters"))
                elif t.dtype not in _QUANTISED_ACTIVATION_TYPES:
                    found.append(("not_int8", f"{role} tensor {i} '{_short(t.name)}' is {t.dtype}; activations must be 8-bit quantised"))
                elif not t.quantized:
                    found.append(("not_int8", f"{role} tensor {i} '{_short(t.name)}' is {t.dtype} without quantisation parameters"))
            if t.dynamic:
                found.append(("dynamic_shape", f"{role} tensor {i} '{_short(t.name)}' has a dynamic shape {list(t.shape_signature or ())}"))
            if not t.constant and not _outer_dims_ok(t.shape):
                found.append(("shape", f"{role} tensor {i} '{_short(t.name)}' {list(t.shape)}: only the 3 innermost dimensions may exceed 1 (batch must be 1)"))
    for pos in _WEIGHT_BEARING.get(op.opcode, ()):
        if pos < len(op.inputs) and op.inputs[pos] >= 0 and not model.tensors[op.inputs[pos]].constant:
            found.append(("limitation", f"parameter input {pos} is not a compile-time constant"))
    return found


def _fused_activation(op: OpInfo) -> int:
    return int(getattr(op.options, "fusedActivationFunction", 0) or 0)


def _check_same_dilation(model: TfliteModel, op: OpInfo) -> list[str]:
    w = int(getattr(op.options, "dilationWFactor", 1) or 1)
    h = int(getattr(op.options, "dilationHFactor", 1) or 1)
    if w != h:
        return [f"dilation x={w}, y={h} differ; the Edge TPU needs the same dilation in x and y "
                "(with a (1, k) kernel set dilation=(d, d): identical result)"]
    return []


def _check_no_fused(model: TfliteModel, op: OpInfo) -> list[str]:
    return ["fused activation function is not supported on this op"] if _fused_activation(op) else []


def _check_concat(model: TfliteModel, op: OpInfo) -> list[str]:
    issues = _check_no_fused(model, op)
    consts = [i for i in op.inputs if i >= 0 and model.tensors[i].constant]
    for i in consts:
        t = model.tensors[i]
        zero = t.zero_point[0] if t.zero_point else 0  # real 0.0 is stored as the zero point
        data = model.constant(i)
        if len(op.inputs) != 2 or data is None or np.any(data != zero):
            issues.append("a constant input is allowed only as one of 2 inputs and must be all zeros")
            break
    return issues


def _check_dequantize(model: TfliteModel, op: OpInfo) -> list[str]:
    if not all(o in model.outputs for o in op.outputs):
        return ["DEQUANTIZE is supported only as the model's last operator (its output a model output)"]
    return []


def _check_fully_connected(model: TfliteModel, op: OpInfo) -> list[str]:
    if int(getattr(op.options, "weightsFormat", 0) or 0) != 0:
        return ["only the default fully-connected weights format is supported"]
    return []


def _reduce_axes(model: TfliteModel, op: OpInfo) -> tuple[Optional[list[int]], int]:
    rank = len(model.tensors[op.inputs[0]].shape)
    axes = model.constant(op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
    return _norm_axes(axes, rank), rank


def _check_reduce(model: TfliteModel, op: OpInfo) -> list[str]:
    axes, rank = _reduce_axes(model, op)
    if axes is None:
        return ["reduction axes are not a compile-time constant"]
    issues = []
    if rank >= 4 and 0 in axes:
        issues.append(f"reduces the batch dimension (axes {axes})")
    if op.opcode == "MEAN" and rank >= 1 and (rank - 1) in axes:
        depth = model.tensors[op.inputs[0]].shape[-1]
        if depth % MEAN_Z_MULTIPLE:
            issues.append(f"z-reduction over {depth} channels; needs a multiple of {MEAN_Z_MULTIPLE}")
    return issues


def _check_pad(model: TfliteModel, op: OpInfo) -> list[str]:
    pads = model.constant(op.inputs[1]) if len(op.inputs) > 1 else None
    if pads is None:
        return ["paddings are not a compile-time constant"]
    pads = np.asarray(pads).reshape(-1, 2)
    if pads.shape[0] >= 4 and np.any(pads[0] != 0):
        return [f"pads the batch dimension {pads[0].tolist()}"]
    return []


def _check_softmax(model: TfliteModel, op: OpInfo) -> list[str]:
    shape = model.tensors[op.inputs[0]].shape
    big = [d for d in shape if d != 1]
    if len(big) > 1 or (big and big[0] > SOFTMAX_MAX_ELEMENTS):
        return [f"softmax input {list(shape)}: supported only on a 1-D input of at most {SOFTMAX_MAX_ELEMENTS} elements"]
    return []


def _check_pack(model: TfliteModel, op: OpInfo) -> list[str]:
    return ["packs along the batch dimension"] if int(getattr(op.options, "axis", 0) or 0) == 0 else []


def _check_split(model: TfliteModel, op: OpInfo) -> list[str]:
    axis = model.constant(op.inputs[0]) if op.inputs else None
    if axis is None:
        return ["split axis is not a compile-time constant"]
    rank = len(model.tensors[op.inputs[1]].shape)
    return ["splits the batch dimension"] if rank >= 4 and int(np.atleast_1d(axis)[0]) % rank == 0 else []


def _check_prelu(model: TfliteModel, op: OpInfo) -> list[str]:
    return [] if len(op.inputs) > 1 and model.tensors[op.inputs[1]].constant else ["PRELU alpha must be constant"]


_LIMIT_CHECKS: dict[str, Callable[[TfliteModel, OpInfo], list[str]]] = {
    "AVERAGE_POOL_2D": _check_no_fused,
    "MAX_POOL_2D": _check_no_fused,
    "CONCATENATION": _check_concat,
    "CONV_2D": _check_same_dilation,
    "DEPTHWISE_CONV_2D": _check_same_dilation,
    "DEQUANTIZE": _check_dequantize,
    "FULLY_CONNECTED": _check_fully_connected,
    "MEAN": _check_reduce,
    "SUM": _check_reduce,
    "REDUCE_MAX": _check_reduce,
    "REDUCE_MIN": _check_reduce,
    "PAD": _check_pad,
    "SOFTMAX": _check_softmax,
    "PACK": _check_pack,
    "SPLIT": _check_split,
    "PRELU": _check_prelu,
}


def lint_model(model: TfliteModel, source: str = "<bytes>", target_runtime: int = DEFAULT_RUNTIME) -> LintReport:
    """Lint an already-parsed model (see lint_tflite)."""
    results: list[OpLint] = []
    for op in model.ops:
        findings: list[tuple[str, str]] = []
        entry = EDGETPU_OPS.get(op.opcode)
        if op.custom_code is not None:
            findings.append(("unsupported_op", f"custom op '{op.custom_code}' is not an Edge TPU operation"))
        elif entry is None:
            findings.append(("unsupported_op", f"{op.opcode} is not in the Edge TPU supported-operations table"))
        elif entry[0] > target_runtime:
            findings.append(("unsupported_op", f"{op.opcode} needs Edge TPU runtime >= {entry[0]} (target {target_runtime})"))
        findings += _tensor_findings(model, op)
        if entry is not None and op.opcode in _LIMIT_CHECKS:
            findings += [("limitation", r) for r in _LIMIT_CHECKS[op.opcode](model, op)]
        if not findings:
            results.append(OpLint(op.index, op.opcode, "ok"))
            continue
        findings.sort(key=lambda f: STATUSES.index(f[0]))
        results.append(OpLint(op.index, op.opcode, findings[0][0], [r for _, r in findings]))

    issues: list[str] = []
    if model.subgraph_count != 1:
        issues.append(f"the model has {model.subgraph_count} subgraphs; the Edge TPU compiler needs exactly one")
    if not model.ops:
        issues.append("the model has no operators")
    io = [model.tensors[i] for i in model.inputs + model.outputs]
    int8_io = all(t.dtype in _QUANTISED_ACTIVATION_TYPES and t.quantized for t in io)
    for t in io:
        if t.dynamic:
            issues.append(f"model I/O tensor '{_short(t.name)}' has a dynamic shape {list(t.shape_signature or ())}")
    passed = not issues and all(r.status == "ok" for r in results)
    return LintReport(source, passed, target_runtime, results, issues, model.histogram(), int8_io)


def lint_tflite(path: PathOrBytes, target_runtime: int = DEFAULT_RUNTIME) -> LintReport:
    """Parse a .tflite file (or its bytes) and check it against the Edge TPU's documented rules."""
    source = str(path) if isinstance(path, (str, Path)) else "<bytes>"
    return lint_model(read_tflite(path), source=source, target_runtime=target_runtime)
