"""Compile a bundle's int8 TFLite models for the Edge TPU with Google's `edgetpu_compiler` (no torch needed).

    edge-vad models compile-edgetpu BUNDLE --out NEW_BUNDLE     (compile_bundle)
    edge-vad export --targets onnx,tflite-int8,edgetpu ...      (add_edgetpu_models, inside the export)

The compiler is x86-64 Debian/Ubuntu software from Coral's apt repository (Coral, "Edge TPU Compiler",
https://coral.ai/docs/edgetpu/compiler/); it writes `<input stem>_edgetpu.tflite` and `<input stem>_edgetpu.log`
into `--out_dir`. Every int8 model of the bundle goes into ONE invocation: models compiled together share the
Edge TPU's on-chip memory for their parameters ("co-compiling", same page), and the coarse backbone and the QACM
head run one after the other on every frame. The backbone goes first, so its parameters get the cache first.

What the compiler reports (operations on the Edge TPU and on the CPU, subgraphs, on-chip and off-chip memory;
edge_vad.bundle.edgetpu_report) goes into the manifest next to the lint's prediction, each `*_edgetpu.tflite`
becomes an artifact (sha256, size) of a new `edgetpu` target, and the new bundle is verified. A partial mapping
is allowed and reported; a compile that fails, or maps nothing, writes nothing under the output's name and never
touches the input bundle (edge_vad.bundle.writer).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from edge_vad.bundle.edgetpu_report import MAPPED, CompileReport, ModelReport, parse_console, parse_log
from edge_vad.bundle.manifest import Manifest
from edge_vad.bundle.verify import VerifyReport, verify_bundle
from edge_vad.bundle.writer import BundleWriter, check_out_dir
from edge_vad.errors import EdgeVadError

log = logging.getLogger("edge_vad.edgetpu")

COMPILER = "edgetpu_compiler"
MISSING_COMPILER_EXIT = 2
CORAL_APT_LINE = "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main"
CORAL_APT_KEY = "https://packages.cloud.google.com/apt/doc/apt-key.gpg"
MISSING_COMPILER = (f"{COMPILER} not found on PATH; Google's Edge TPU compiler runs on x86-64 Debian/Ubuntu: add "
                    f"Coral's apt repository ('{CORAL_APT_LINE}', key {CORAL_APT_KEY}) and run "
                    "'sudo apt-get install edgetpu-compiler'")
COMPILE_TIMEOUT_S = 600  # the compiler stops itself after --timeout_sec (default 180 s); this is the backstop
EDGETPU_TARGET = "edgetpu"
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"  # the op a compiled model hands to the Edge TPU delegate
_STAGE_ORDER = ("coarse_backbone", "coarse_head")  # co-compile order: the parameter cache goes to the first


def find_compiler() -> str:
    """The compiler's path, or EdgeVadError (exit 2) naming where to get it."""
    found = shutil.which(COMPILER)
    if found is None:
        raise EdgeVadError(MISSING_COMPILER, exit_code=MISSING_COMPILER_EXIT)
    return found


def compilable(artifacts: Dict[str, Dict[str, Any]]) -> List[str]:
    """Names of the int8 TFLite artifacts not yet compiled, backbone first."""
    names = [n for n, a in artifacts.items() if a.get("format") == "tflite" and a.get("precision") == "int8"
             and not a.get("edgetpu_compile")]
    order = {stage: i for i, stage in enumerate(_STAGE_ORDER)}
    return sorted(names, key=lambda n: order.get(artifacts[n].get("stage", ""), len(order)))


def _lint_prediction(lint: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if not lint:
        return None
    ops = lint.get("ops") or []
    return {"passed": bool(lint.get("passed")), "target_runtime": lint.get("target_runtime"), "operations": len(ops),
            "predicted_on_cpu": [f"{op.get('opcode')}: {(op.get('reasons') or [op.get('status')])[0]}"
                                 for op in ops if op.get("status") != "ok"]}


def run_compiler(compiler: str, inputs: Sequence[Path], out_dir: Path, min_runtime_version: Optional[int] = None,
                 timeout_s: float = COMPILE_TIMEOUT_S) -> Tuple[CompileReport, Dict[str, Tuple[ModelReport, Path]]]:
    """Compile `inputs` together into `out_dir`; (report, {input file name: (its section, its output file)}).
    Any failure is one EdgeVadError line with the compiler's own words."""
    flags = ["--show_operations"] + (["--min_runtime_version", str(min_runtime_version)] if min_runtime_version else [])
    cmd = [compiler, "--out_dir", str(out_dir), *flags, *[str(p) for p in inputs]]
    what = ", ".join(p.name for p in inputs)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=str(out_dir))
    except subprocess.TimeoutExpired:
        raise EdgeVadError(f"{COMPILER} did not finish compiling {what} within {timeout_s:.0f} s; nothing was written, "
                           "the input bundle is unchanged") from None
    except OSError as exc:
        raise EdgeVadError(f"cannot run {compiler} ({exc}); reinstall edgetpu-compiler") from None
    report = parse_console(proc.stdout + "\n" + proc.stderr)
    version = report.compiler_version or "(version unknown)"
    if proc.returncode != 0 or not report.succeeded:
        raise EdgeVadError(f"{COMPILER} {version} failed on {what} (exit code {proc.returncode}): {report.failure()}; "
                           "nothing was written and the input bundle is unchanged; `edge-vad models info BUNDLE` "
                           "shows what the EdgeTPU lint found in these models")
    outputs: Dict[str, Tuple[ModelReport, Path]] = {}
    for path in inputs:
        model = report.model(path.name)
        output = out_dir / f"{path.stem}_edgetpu.tflite"  # the compiler's naming: input_filename_edgetpu.tflite
        if model is None or not output.is_file():
            raise EdgeVadError(f"{COMPILER} {version} reported success but wrote no {output.name} for {path.name}; "
                               "nothing was written and the input bundle is unchanged")
        log_file = out_dir / f"{path.stem}_edgetpu.log"
        if log_file.is_file():
            rows = parse_log(log_file.read_text(encoding="utf-8", errors="replace"))[2]
            if rows:
                model.operations = rows
        if model.ops_on_tpu < 1 or EDGETPU_CUSTOM_OP not in output.read_bytes():
            first = next((f"{r.operator}: {r.status}" for r in model.not_mapped()), "no reason listed")
            raise EdgeVadError(f"{COMPILER} {version} mapped none of the {model.total_ops} operations of {path.name} "
                               f"to the Edge TPU ({first}); nothing was written and the input bundle is unchanged")
        outputs[path.name] = (model, output)
    return report, outputs


def compile_record(source: str, source_entry: Dict[str, Any], model: ModelReport, report: CompileReport,
                   flags: List[str], co_compiled: List[str]) -> Dict[str, Any]:
    """The manifest's `edgetpu_compile` record of one compiled model."""
    return {"source_artifact": source, "compiler_version": report.compiler_version, "flags": flags,
            "co_compiled": co_compiled, "subgraphs": model.subgraphs, "operations_total": model.total_ops,
            "operations_on_tpu": model.ops_on_tpu, "operations_on_cpu": model.ops_on_cpu,
            "operations": [{"operator": r.operator, "count": r.count, "status": r.status} for r in model.operations],
            "on_chip_bytes": model.on_chip_bytes, "on_chip_remaining_bytes": model.on_chip_remaining_bytes,
            "off_chip_bytes": model.off_chip_bytes, "lint_prediction": _lint_prediction(source_entry.get("edgetpu_lint"))}


def add_edgetpu_models(writer: BundleWriter, compiler: str, min_runtime_version: Optional[int] = None) -> Dict[str, str]:
    """Compile every uncompiled int8 TFLite artifact already in `writer` and add the results; returns
    {source artifact: compiled artifact}. The sources stay in the bundle (the CPU path runs them)."""
    entries = writer.artifacts
    names = compilable(entries)
    if not names:
        raise EdgeVadError("the bundle has no int8 TFLite models to compile; export it with --targets onnx,tflite-int8 "
                           "(add edgetpu to compile during the export)")
    inputs = [writer.path(entries[n]["file"]) for n in names]
    flags = ["--show_operations"] + (["--min_runtime_version", str(min_runtime_version)] if min_runtime_version else [])
    renames: Dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edge-vad-edgetpu-") as work:
        report, outputs = run_compiler(compiler, inputs, Path(work), min_runtime_version)
        for name, path in zip(names, inputs):
            model, output = outputs[path.name]
            source = entries[name]
            compiled = f"{name}_edgetpu"
            shutil.move(str(output), str(writer.path(output.name)))
            record = compile_record(name, source, model, report, flags, [n for n in names if n != name])
            writer.add(compiled, output.name, source["stage"], "tflite", source["precision"],
                       inputs=source.get("inputs", []), outputs=source.get("outputs", []), window=source.get("window"),
                       edgetpu_compile=record,
                       conversion={"edgetpu_compiler": report.compiler_version, "from": source["file"],
                                   "parity": "not checked: the compiled operations run only on an Edge TPU"})
            renames[name] = compiled
            log.debug("%s", compile_summary(compiled, record))
    return renames


def edgetpu_target(targets: Dict[str, Dict[str, Any]], renames: Dict[str, str]) -> Dict[str, Any]:
    """The `edgetpu` target: the int8 target's artifacts with each compiled model in place of its source."""
    base = next((t for t in targets.values() if any(a in renames for a in t.get("artifacts", []))), None)
    if base is None:
        raise EdgeVadError(f"no target of the bundle lists the compiled models' sources {sorted(renames)}; re-export it")
    return {"backends": [EDGETPU_TARGET], "artifacts": [renames.get(a, a) for a in base["artifacts"]],
            "notes": "the coarse models compiled by edgetpu_compiler run with the Edge TPU delegate (ops the compiler "
                     "left on the CPU run there); the fine stage's fp32 ONNX runs on the CPU with onnxruntime"}


def _fmt_bytes(n: Optional[int]) -> str:
    if n is None:
        return "?"
    for unit, scale in (("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def compile_summary(name: str, record: Any) -> str:
    """One line: how much of the model the Edge TPU runs, and what the lint had predicted."""
    r = record if isinstance(record, dict) else record.model_dump()
    cpu = [f"{o['operator']} x{o['count']} ({o['status']})" for o in r["operations"]
           if o["status"] != MAPPED]
    mapped = (f"all {r['operations_total']} operations on the Edge TPU" if r["operations_on_cpu"] == 0 else
              f"PARTIAL: {r['operations_on_tpu']} of {r['operations_total']} operations on the Edge TPU, "
              f"{r['operations_on_cpu']} on the CPU" + (f" [{'; '.join(cpu)}]" if cpu else ""))
    lint = r.get("lint_prediction")
    predicted = "" if not lint else (
        f"; the lint predicted {'all' if lint['passed'] else 'not all'} {lint['operations']} on the Edge TPU")
    return (f"{name}: {mapped}, {r['subgraphs']} Edge TPU subgraph(s); parameters {_fmt_bytes(r['on_chip_bytes'])} "
            f"on-chip, {_fmt_bytes(r['off_chip_bytes'])} off-chip (compiler {r['compiler_version']}){predicted}")


def compile_notes(manifest: Manifest) -> List[str]:
    """compile_summary of every compiled artifact of a bundle."""
    return [compile_summary(n, a.edgetpu_compile) for n, a in manifest.artifacts.items()
            if a.edgetpu_compile is not None]


def compile_bundle(bundle: Union[Path, str], out: Union[Path, str], force: bool = False,
                   min_runtime_version: Optional[int] = None) -> VerifyReport:
    """BUNDLE -> NEW_BUNDLE with an `edgetpu` target; returns the new bundle's verification report."""
    compiler = find_compiler()
    source = verify_bundle(bundle)
    manifest = source.manifest
    done = sorted(n for n, a in manifest.artifacts.items() if a.edgetpu_compile is not None)
    if done:
        raise EdgeVadError(f"bundle {source.bundle} already has Edge TPU models ({', '.join(done)}); compile the "
                           "bundle they were made from")
    out = Path(out)
    if out.absolute().resolve() == source.bundle.absolute().resolve():
        raise EdgeVadError("--out must be a new folder, not the input bundle: the input stays as it is")
    check_out_dir(out, force)
    data = manifest.model_dump(mode="json", by_alias=True)
    with BundleWriter(out, force) as writer:
        for name, entry in data["artifacts"].items():
            writer.keep(name, source.bundle, entry)
        renames = add_edgetpu_models(writer, compiler, min_runtime_version)
        fields = {k: v for k, v in data.items() if k != "artifacts"}
        fields["targets"] = {**fields["targets"], EDGETPU_TARGET: edgetpu_target(fields["targets"], renames)}
        version = writer.artifacts[next(iter(renames.values()))]["edgetpu_compile"]["compiler_version"]
        fields["tools"] = {**fields["tools"], COMPILER: version}
        writer.finish(fields)
    return verify_bundle(out)
