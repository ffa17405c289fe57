"""Read what Google's `edgetpu_compiler` reports: its console report and its `<stem>_edgetpu.log`.

The formats, as the compiler prints them (Coral, "Edge TPU Compiler", https://coral.ai/docs/edgetpu/compiler/,
and compiler output pasted in google-coral/edgetpu issues #60, #324, #427, #458, #518, #572, #671 by
compiler versions 2.1 to 16.0; copies of the lines are in tests/edge_vad_test_support/edgetpu_standin.py):

    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 542 ms.          ("Models compiled ..." when several are co-compiled)

    Input model: quantized_model.tflite             (one such section per model)
    Input size: 4.04MiB
    Output model: quantized_model_edgetpu.tflite
    Output size: 4.13MiB
    On-chip memory used for caching model parameters: 604.50KiB
    On-chip memory remaining for caching model parameters: 511.50KiB
    Off-chip memory used for streaming uncached model parameters: 3.45MiB
    Number of Edge TPU subgraphs: 1
    Total number of operations: 50
    Operation log: quantized_model_edgetpu.log
    Model successfully compiled but not all operations are supported by the Edge TPU. ...   (partial only)
    Number of operations that will run on Edge TPU: 135                                        (partial only)
    Number of operations that will run on CPU: 1                                               (partial only)

    Operator                       Count      Status                 (with -s/--show_operations; else
                                                                       "See the operation log file ...")
    CONV_2D                        11         Mapped to Edge TPU
    MEAN                           1          Operation is otherwise supported, but not mapped due to ...

The log file holds the version, `Input:` / `Output:` lines and the same operator table. A failed compile
prints the version and then a reason, e.g. "Internal compiler error. Aborting!" or "Invalid model: X" /
"Model not quantized". Nothing here runs the compiler (edge_vad.bundle.edgetpu_compile does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

MAPPED = "Mapped to Edge TPU"  # the operator table's status for an op the Edge TPU runs

_VERSION = re.compile(r"Edge TPU Compiler version (\S+)")
_SUCCESS = re.compile(r"Models? compiled successfully in (\d+) ms")
_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")
_SIZE = re.compile(r"^([\d.]+)\s*(B|KiB|MiB|GiB)$")
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
_BOILERPLATE = ("Edge TPU Compiler version", "Started a compilation timeout timer", "Searching for valid delegate",
                "Try to compile segment")
# "Key: value" lines of a model section -> ModelReport field
_FIELDS = {
    "Input model": "input_model", "Input size": "input_size", "Output model": "output_model",
    "Output size": "output_size",
    "On-chip memory used for caching model parameters": "on_chip_used",
    "On-chip memory remaining for caching model parameters": "on_chip_remaining",
    "Off-chip memory used for streaming uncached model parameters": "off_chip_used",
    "Number of Edge TPU subgraphs": "subgraphs", "Total number of operations": "total_ops",
    "Operation log": "log", "Number of operations that will run on Edge TPU": "ops_on_tpu",
    "Number of operations that will run on CPU": "ops_on_cpu",
}


def size_bytes(text: str) -> int:
    """'604.50KiB' -> 619008; the compiler prints sizes with binary units (B, KiB, MiB, GiB)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"not a compiler size: {text!r}")
    return int(round(float(match.group(1)) * _UNITS[match.group(2)]))


@dataclass(frozen=True)
class OperationRow:
    """One row of the operator table: `count` ops of type `operator` with the compiler's `status` words."""

    operator: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status == MAPPED


@dataclass
class ModelReport:
    """One compiled model's section of the console report (plus the operator table of its log)."""

    input_model: str = ""
    output_model: str = ""
    log: str = ""
    fields: Dict[str, str] = field(default_factory=dict)  # field name -> the compiler's text
    operations: List[OperationRow] = field(default_factory=list)

    def _int(self, key: str) -> Optional[int]:
        return int(self.fields[key]) if key in self.fields else None

    def _bytes(self, key: str) -> Optional[int]:
        return size_bytes(self.fields[key]) if key in self.fields else None

    @property
    def total_ops(self) -> int:
        total = self._int("total_ops")
        return total if total is not None else sum(r.count for r in self.operations)

    @property
    def ops_on_cpu(self) -> int:
        """From the partial-mapping lines; a full mapping prints none of them, then the table decides."""
        cpu = self._int("ops_on_cpu")
        return cpu if cpu is not None else sum(r.count for r in self.operations if not r.mapped)

    @property
    def ops_on_tpu(self) -> int:
        tpu = self._int("ops_on_tpu")
        return tpu if tpu is not None else self.total_ops - self.ops_on_cpu

    @property
    def subgraphs(self) -> int:
        return self._int("subgraphs") or 0

    @property
    def on_chip_bytes(self) -> int:
        return self._bytes("on_chip_used") or 0

    @property
    def on_chip_remaining_bytes(self) -> Optional[int]:
        return self._bytes("on_chip_remaining")

    @property
    def off_chip_bytes(self) -> int:
        return self._bytes("off_chip_used") or 0

    def not_mapped(self) -> List[OperationRow]:
        return [r for r in self.operations if not r.mapped]


@dataclass
class CompileReport:
    """The whole console report: the compiler's version, whether it says it succeeded, one section per model,
    and, when it failed, its own words."""

    compiler_version: str = ""
    succeeded: bool = False
    compile_ms: Optional[int] = None
    models: List[ModelReport] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)  # lines that are neither boilerplate nor report fields

    def model(self, input_name: str) -> Optional[ModelReport]:
        """The section whose `Input model:` is `input_name` (a path or a file name)."""
        for m in self.models:
            if m.input_model == input_name or m.input_model.rsplit("/", 1)[-1] == input_name.rsplit("/", 1)[-1]:
                return m
        return None

    def failure(self) -> str:
        """The compiler's reason for a failure, in its own words (one line)."""
        useful = [m for m in self.messages if not m.startswith("Compilation child process")]
        return "; ".join(useful[:3]) or "no reason printed"


def parse_operator_table(lines: List[str]) -> List[OperationRow]:
    """Rows after an 'Operator  Count  Status' header (blank lines and the header itself skipped)."""
    rows: List[OperationRow] = []
    in_table = False
    for line in lines:
        stripped = line.strip()
        if stripped.split() == ["Operator", "Count", "Status"]:
            in_table = True
            continue
        if not in_table or not stripped:
            continue
        match = _ROW.match(stripped)
        if match:
            rows.append(OperationRow(match.group(1), int(match.group(2)), match.group(3)))
        elif rows:  # the first line that is not a row ends the table ("... All other operators were mapped")
            in_table = False
    return rows


def parse_console(text: str) -> CompileReport:
    """Parse the compiler's stdout (+ stderr). Tolerates the variations of compiler versions 2.1 .. 16.0."""
    report = CompileReport()
    current: Optional[ModelReport] = None
    lines = text.splitlines()
    table_lines: List[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            if current is not None and table_lines:
                table_lines.append(line)
            continue
        version = _VERSION.search(stripped)
        if version:
            report.compiler_version = version.group(1)
            continue
        success = _SUCCESS.search(stripped)
        if success:
            report.succeeded = True
            report.compile_ms = int(success.group(1))
            continue
        key, sep, value = stripped.partition(": ")
        if sep and key.replace("INFO: ", "") in _FIELDS:
            name = _FIELDS[key.replace("INFO: ", "")]
            if name == "input_model":
                if current is not None and table_lines:
                    current.operations = parse_operator_table(table_lines)
                current = ModelReport(input_model=value.strip())
                report.models.append(current)
                table_lines = []
                continue
            if current is not None:
                current.fields[name] = value.strip()
                if name == "output_model":
                    current.output_model = value.strip()
                elif name == "log":
                    current.log = value.strip()
            continue
        if stripped.split() == ["Operator", "Count", "Status"] or (table_lines and _ROW.match(stripped)):
            table_lines.append(line)
            continue
        if current is not None and stripped.startswith(("Model successfully compiled but", "See the operation log",
                                                        "... All other operators")):
            continue
        if stripped.startswith(_BOILERPLATE) or stripped == "Compilation succeeded!":
            continue
        report.messages.append(stripped)
    if current is not None and table_lines:
        current.operations = parse_operator_table(table_lines)
    if report.succeeded and not report.models:
        report.succeeded = False
        report.messages.append("the compiler reported success but listed no compiled model")
    return report


def parse_log(text: str) -> Tuple[str, str, List[OperationRow]]:
    """(input model, output model, operator table) of a `<stem>_edgetpu.log`."""
    input_model = output_model = ""
    lines = text.splitlines()
    for line in lines:
        key, sep, value = line.strip().partition(": ")
        if sep and key == "Input":
            input_model = value.strip()
        elif sep and key == "Output":
            output_model = value.strip()
    return input_model, output_model, parse_operator_table(lines)
