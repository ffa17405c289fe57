"""A .tflite graph op by op: what each op computes (multiply-accumulates), which model outputs it serves, and the
same graph cut down to some outputs (to time what a frame needs against what the graph computes).

    g = read_graph(path)                          # needs ai-edge-litert (its flatbuffer schema and tools)
    g.ops[i].name, g.ops[i].macs, g.ops[i].serves   # e.g. "CONV_2D", 4_816_896, {"feature", "heatmap", ...}
    by = g.macs_by_outputs()                      # {("feature", "heatmap"): ..., (all outputs): ..., ...}
    open(out, "wb").write(prune(path, keep=("feature", "heatmap")))   # ops no kept output needs are gone
    open(out, "wb").write(prefix(path, k))        # ops 0..k only, op k's output the model's output

MACs per op (2 x MACs = FLOPs, the rule of edge_vad_export.budgets): CONV_2D out_h*out_w*out_c*k_h*k_w*in_c;
DEPTHWISE_CONV_2D out_h*out_w*out_c*k_h*k_w; TRANSPOSE_CONV in_h*in_w*in_c*k_h*k_w*out_c; FULLY_CONNECTED
in*out; elementwise ops and MEAN one per input element (additions, reported as MACs for one scale).
An op "serves" the outputs it is an ancestor of; ops serving every output are the shared trunk.
Output names are the signature's (litert-torch writes `serving_default_<name>_output` as tensor names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, List, Sequence, Tuple

from edge_vad.errors import EdgeVadError, require_module

LITERT_HINT = "pip install ai-edge-litert (or pip install 'edge-vad[coral]')"


def _modules():
    fu = require_module("ai_edge_litert.tools.flatbuffer_utils", LITERT_HINT)
    schema = require_module("ai_edge_litert.schema_py_generated", LITERT_HINT)
    return fu, schema


@dataclass(frozen=True)
class Op:
    index: int
    name: str
    inputs: Tuple[Tuple[int, ...], ...]
    outputs: Tuple[Tuple[int, ...], ...]
    macs: int
    serves: FrozenSet[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Graph:
    ops: Tuple[Op, ...]
    outputs: Tuple[str, ...]

    def macs_by_outputs(self) -> Dict[Tuple[str, ...], int]:
        out: Dict[Tuple[str, ...], int] = {}
        for op in self.ops:
            key = tuple(sorted(op.serves))
            out[key] = out.get(key, 0) + op.macs
        return out

    @property
    def total_macs(self) -> int:
        return sum(op.macs for op in self.ops)


def _shape(tensor) -> Tuple[int, ...]:
    return tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))


def _prod(xs: Sequence[int]) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def op_macs(name: str, inputs: Sequence[Tuple[int, ...]], outputs: Sequence[Tuple[int, ...]]) -> int:
    """Multiply-accumulates of one op (module doc)."""
    out = outputs[0] if outputs else ()
    if name == "CONV_2D":  # weights [out_c, k_h, k_w, in_c]
        return _prod(out) * _prod(inputs[1][1:])
    if name == "DEPTHWISE_CONV_2D":  # weights [1, k_h, k_w, out_c]
        return _prod(out) * inputs[1][1] * inputs[1][2]
    if name == "TRANSPOSE_CONV":  # inputs: output shape, weights [out_c, k_h, k_w, in_c], data [1, h, w, in_c]
        return _prod(inputs[2]) * _prod(inputs[1][:3])
    if name == "FULLY_CONNECTED":  # weights [out, in]
        return _prod(inputs[1])
    return _prod(inputs[0]) if inputs else 0


def _opcode_names(model, schema) -> List[str]:
    fu, _ = _modules()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return [names.get(fu.get_builtin_code_from_operator_code(c), "CUSTOM") for c in model.operatorCodes]


def _output_names(model) -> Dict[int, str]:
    """tensor index -> the signature's output name (else the tensor's own name)."""
    sg = model.subgraphs[0]
    named = {}
    for sd in model.signatureDefs or []:
        for t in sd.outputs or []:
            named[int(t.tensorIndex)] = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
    return {int(i): named.get(int(i)) or sg.tensors[i].name.decode() for i in sg.outputs}


def read_graph(path: Path) -> Graph:
    fu, schema = _modules()
    model = fu.read_model(str(path))
    if len(model.subgraphs) != 1:
        raise EdgeVadError(f"{path}: {len(model.subgraphs)} subgraphs; this profiler reads single-graph models")
    sg = model.subgraphs[0]
    codes = _opcode_names(model, schema)
    outs = _output_names(model)
    producer = {int(t): i for i, op in enumerate(sg.operators) for t in op.outputs}
    serves: List[set] = [set() for _ in sg.operators]
    for tensor, name in outs.items():  # walk back from each output
        stack = [tensor]
        seen = set()
        while stack:
            t = stack.pop()
            i = producer.get(t)
            if i is None or i in seen:
                continue
            seen.add(i)
            serves[i].add(name)
            stack.extend(int(x) for x in sg.operators[i].inputs if x >= 0)
    ops = []
    for i, op in enumerate(sg.operators):
        ins = tuple(_shape(sg.tensors[t]) for t in op.inputs if t >= 0)
        ous = tuple(_shape(sg.tensors[t]) for t in op.outputs)
        name = codes[op.opcodeIndex]
        ops.append(Op(i, name, ins, ous, op_macs(name, ins, ous), frozenset(serves[i])))
    return Graph(tuple(ops), tuple(outs.values()))


def prune(path: Path, keep: Sequence[str]) -> bytes:
    """The model's bytes with only the outputs `keep` (signature names) and the ops they need."""
    fu, _ = _modules()
    model = fu.read_model(str(path))
    sg = model.subgraphs[0]
    outs = _output_names(model)
    unknown = sorted(set(keep) - set(outs.values()))
    if unknown or not keep:
        raise EdgeVadError(f"{path}: outputs {unknown or list(keep)} are not among {sorted(outs.values())}")
    kept_tensors = [t for t, n in outs.items() if n in keep]
    graph = read_graph(path)
    needed = [i for i, op in enumerate(graph.ops) if op.serves & set(keep)]
    sg.operators = [sg.operators[i] for i in needed]
    sg.outputs = kept_tensors
    for sd in model.signatureDefs or []:
        sd.outputs = [t for t in sd.outputs or [] if int(t.tensorIndex) in kept_tensors]
    return bytes(fu.convert_object_to_bytearray(model))


def prefix(path: Path, last: int) -> bytes:
    """The model's bytes cut after op `last` (file order, which TFLite executes): ops 0..last, op last's first
    output the only model output, no signature. Timing every prefix gives a cumulative cost curve whose steps
    are the ops' own costs."""
    fu, _ = _modules()
    model = fu.read_model(str(path))
    sg = model.subgraphs[0]
    if not 0 <= last < len(sg.operators):
        raise EdgeVadError(f"{path}: op {last} out of range (the model has {len(sg.operators)} ops)")
    sg.outputs = [int(sg.operators[last].outputs[0])]
    sg.operators = sg.operators[:last + 1]
    model.signatureDefs = []
    return bytes(fu.convert_object_to_bytearray(model))
