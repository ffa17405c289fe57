"""Read a .tflite FILE (its flatbuffer) into small, plain Python records.

Why the file and not an interpreter: an interpreter rewrites the graph it runs (XNNPACK shows up
as an extra DELEGATE node and hides the ops it took), so op counts and per-op checks must come
from the model file itself (DESIGN.md trap 5). The flatbuffer bindings are the schema module
shipped inside `ai-edge-litert` (the same package the Coral runtime extra installs), so no
TensorFlow is needed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from edge_vad.errors import EdgeVadError, require_module

PathOrBytes = Union[str, Path, bytes, bytearray, memoryview]

_TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier of TFLite models (bytes 4..8)
_INSTALL_HINT = "pip install 'edge-vad[coral]' (ai-edge-litert)"


def _schema() -> Any:
    return require_module("ai_edge_litert.schema_py_generated", _INSTALL_HINT)


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the main subgraph."""

    index: int
    name: str
    dtype: str  # lower-case TFLite type name: "int8", "float32", "int32", ...
    shape: tuple[int, ...]
    shape_signature: Optional[tuple[int, ...]]  # -1 marks a dynamic dimension; None when the file has none
    constant: bool  # backed by data in the file (weights, biases, shape/axis parameters)
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def quantized(self) -> bool:
        return len(self.scale) > 0

    @property
    def dynamic(self) -> bool:
        return self.shape_signature is not None and any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class OpInfo:
    """One operator of the main subgraph, in execution order."""

    index: int
    opcode: str  # BuiltinOperator name, e.g. "CONV_2D"; "CUSTOM" ops carry custom_code
    inputs: tuple[int, ...]  # tensor indices (-1: optional input left out)
    outputs: tuple[int, ...]
    custom_code: Optional[str] = None
    options: Any = field(default=None, compare=False, repr=False)  # the schema's *OptionsT object


@dataclass
class TfliteModel:
    """The main subgraph of a .tflite file plus model-level facts."""

    tensors: list[TensorInfo]
    ops: list[OpInfo]
    inputs: list[int]  # tensor indices of the subgraph inputs
    outputs: list[int]
    subgraph_count: int
    signature_inputs: dict[str, int]  # signature name ("args_0") -> tensor index
    signature_outputs: dict[str, int]
    _constants: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def histogram(self) -> dict[str, int]:
        """Op name -> count, sorted by count (then name); custom ops appear as CUSTOM:<code>."""
        counts = Counter(op.opcode if op.custom_code is None else f"CUSTOM:{op.custom_code}" for op in self.ops)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def constant(self, tensor_index: int) -> Optional[np.ndarray]:
        """The data of a constant tensor as a numpy array of its dtype and shape (None if not constant)."""
        return self._constants.get(tensor_index)


def _read_bytes(source: PathOrBytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    if not path.is_file():
        raise EdgeVadError(f"TFLite model not found: {path}; pass the path of an existing .tflite file")
    return path.read_bytes()


def read_tflite(source: PathOrBytes) -> TfliteModel:
    """Parse a .tflite file (path or bytes) into a TfliteModel (main subgraph = subgraph 0)."""
    data = _read_bytes(source)
    if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
        where = source if isinstance(source, (str, Path)) else "the given bytes"
        raise EdgeVadError(f"{where} is not a TFLite model (no 'TFL3' identifier); pass a .tflite file")
    schema = _schema()
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    except Exception as exc:  # a corrupt flatbuffer raises struct/index errors of several kinds
        raise EdgeVadError(f"cannot parse the TFLite flatbuffer ({type(exc).__name__}: {exc}); re-export the model") from None
    if not model.subgraphs:
        raise EdgeVadError("the TFLite model has no subgraph; re-export the model")

    type_names = {k: v.lower() for k, v in _enum_names(schema.TensorType).items()}
    op_names = _enum_names(schema.BuiltinOperator)
    graph = model.subgraphs[0]
    buffers = model.buffers or []

    tensors: list[TensorInfo] = []
    constants: dict[int, np.ndarray] = {}
    for i, t in enumerate(graph.tensors or []):
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else ()))
        sig = tuple(int(d) for d in t.shapeSignature) if t.shapeSignature is not None else None
        dtype = type_names.get(t.type, f"type{t.type}")
        raw = _buffer_bytes(buffers, t.buffer, data)
        if raw is not None and raw.size and dtype in _NUMPY_TYPES:
            arr = raw.view(_NUMPY_TYPES[dtype])
            constants[i] = arr.reshape(shape) if int(np.prod(shape, dtype=np.int64)) == arr.size else arr
        q = t.quantization
        scale = tuple(float(s) for s in q.scale) if q is not None and q.scale is not None else ()
        zp = tuple(int(z) for z in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
        qdim = int(q.quantizedDimension) if q is not None else 0
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name or "")
        tensors.append(TensorInfo(i, name, dtype, shape, sig, raw is not None and raw.size > 0, scale, zp, qdim))

    opcodes = model.operatorCodes or []
    ops: list[OpInfo] = []
    for i, op in enumerate(graph.operators or []):
        code = opcodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        ops.append(
            OpInfo(
                index=i,
                opcode=name,
                inputs=tuple(int(x) for x in (op.inputs if op.inputs is not None else ())),
                outputs=tuple(int(x) for x in (op.outputs if op.outputs is not None else ())),
                custom_code=custom if name == "CUSTOM" else None,
                options=op.builtinOptions,
            )
        )

    sig_in: dict[str, int] = {}
    sig_out: dict[str, int] = {}
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == 0:
            for tm in sig.inputs or []:
                sig_in[tm.name.decode() if isinstance(tm.name, bytes) else tm.name] = int(tm.tensorIndex)
            for tm in sig.outputs or []:
                sig_out[tm.name.decode() if isinstance(tm.name, bytes) else tm.name] = int(tm.tensorIndex)
            break

    return TfliteModel(
        tensors=tensors,
        ops=ops,
        inputs=[int(x) for x in (graph.inputs if graph.inputs is not None else ())],
        outputs=[int(x) for x in (graph.outputs if graph.outputs is not None else ())],
        subgraph_count=len(model.subgraphs),
        signature_inputs=sig_in,
        signature_outputs=sig_out,
        _constants=constants,
    )


_NUMPY_TYPES = {
    "float32": np.float32, "float16": np.float16, "float64": np.float64,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64, "bool": np.bool_,
}


def _buffer_bytes(buffers: list, index: int, data: bytes) -> Optional[np.ndarray]:
    """Raw bytes of buffer `index` (None for buffer 0, the schema's empty sentinel, or no data)."""
    if index <= 0 or index >= len(buffers):
        return None
    buf = buffers[index]
    if buf.data is not None and len(buf.data):
        return np.asarray(buf.data, dtype=np.uint8)
    # Models over 2 GB keep tensor data after the flatbuffer, addressed by offset/size (offset 1 = unset).
    if buf.offset > 1 and buf.size > 0:
        return np.frombuffer(data, dtype=np.uint8, count=int(buf.size), offset=int(buf.offset))
    return None


def op_histogram(source: PathOrBytes) -> dict[str, int]:
    """Op name -> count parsed from the model file (never from an interpreter)."""
    return read_tflite(source).histogram()
