"""`edge-vad models compile-edgetpu`: Google's edgetpu_compiler on a bundle's int8 models, its report in the
manifest, an `edgetpu` target, a verified new bundle; failures leave the input as it was and write nothing.

The real compiler is x86-64 Debian/Ubuntu software from Coral's apt repository and cannot be installed here:
the parser is checked on compiler output pasted in Coral's issue tracker, and the compile step against a
stand-in compiler (edge_vad_test_support/edgetpu_standin.py) that writes the real report format.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
from rich.console import Console

from edge_vad.bundle import default_bundle_dir, verify_bundle
from edge_vad.bundle.edgetpu_compile import MISSING_COMPILER_EXIT, compile_bundle
from edge_vad.bundle.edgetpu_report import parse_console, parse_log, size_bytes
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import sha256_file
from edge_vad_test_support.edgetpu_standin import install_compiler, path_with

# Compiler 15.0, partial mapping, pasted in https://github.com/google-coral/edgetpu/issues/427 (table shortened).
REAL_PARTIAL = """Edge TPU Compiler version 15.0.340273435

Model compiled successfully in 1379 ms.

Input model: model.tflite
Input size: 4.41MiB
Output model: model_edgetpu.tflite
Output size: 5.49MiB
On-chip memory used for caching model parameters: 1.92MiB
On-chip memory remaining for caching model parameters: 1.75KiB
Off-chip memory used for streaming uncached model parameters: 3.23MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 136
Operation log: model_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 135
Number of operations that will run on CPU: 1

Operator                       Count      Status

RESHAPE                        15         Mapped to Edge TPU
CONCATENATION                  3          Mapped to Edge TPU
MAX_POOL_2D                    3          Mapped to Edge TPU
ADD                            10         Mapped to Edge TPU
CUSTOM                         1          Operation is working on an unsupported data type
"""
# Compiler 16.0, full mapping, https://github.com/google-coral/edgetpu/issues/572
REAL_FULL = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 542 ms.

Input model: quantized_model.tflite
Input size: 4.04MiB
Output model: quantized_model_edgetpu.tflite
Output size: 4.13MiB
On-chip memory used for caching model parameters: 604.50KiB
On-chip memory remaining for caching model parameters: 511.50KiB
Off-chip memory used for streaming uncached model parameters: 3.45MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 50
Operation log: quantized_model_edgetpu.log
See the operation log file for individual operation details.
Compilation child process completed within timeout period.
Compilation succeeded!
"""
# A *_edgetpu.log of compiler 16.0 (an EfficientDet-Lite model; rows shortened), quoted in a published write-up.
REAL_LOG = """Edge TPU Compiler version 16.0.384591198
Input: efficientdet_coral_v2.tflite
Output: efficientdet_coral_v2_edgetpu.tflite

Operator                       Count      Status

ADD                            42         Mapped to Edge TPU
CUSTOM                         1          Operation is working on an unsupported data type
RESHAPE                        10         Mapped to Edge TPU
DEQUANTIZE                     2          Operation is working on an unsupported data type
"""
# Failures: https://github.com/google-coral/edgetpu/issues/189 and #313
REAL_FAILURES = ["Edge TPU Compiler version 14.1.317412892\nInternal compiler error. Aborting!\n",
                 "Edge TPU Compiler version 15.0.340273435\nInvalid model: heehoo.tflite\nModel not quantized\n"]


def test_parser_reads_the_compilers_real_reports() -> None:
    partial = parse_console(REAL_PARTIAL)
    assert partial.succeeded and partial.compiler_version == "15.0.340273435" and partial.compile_ms == 1379
    (m,) = partial.models
    assert (m.input_model, m.output_model, m.log) == ("model.tflite", "model_edgetpu.tflite", "model_edgetpu.log")
    assert (m.total_ops, m.ops_on_tpu, m.ops_on_cpu, m.subgraphs) == (136, 135, 1, 1)
    assert m.on_chip_bytes == size_bytes("1.92MiB") and m.on_chip_remaining_bytes == 1792
    assert m.off_chip_bytes == round(3.23 * 2 ** 20)
    assert [(r.operator, r.count, r.mapped) for r in m.not_mapped()] == [("CUSTOM", 1, False)]
    full = parse_console(REAL_FULL)
    (f,) = full.models
    assert full.succeeded and (f.total_ops, f.ops_on_tpu, f.ops_on_cpu) == (50, 50, 0)
    assert f.on_chip_bytes == 619008 and f.off_chip_bytes == round(3.45 * 2 ** 20) and not partial.messages
    src, out, rows = parse_log(REAL_LOG)
    assert (src, out) == ("efficientdet_coral_v2.tflite", "efficientdet_coral_v2_edgetpu.tflite")
    assert [(r.operator, r.count) for r in rows if not r.mapped] == [("CUSTOM", 1), ("DEQUANTIZE", 2)]
    for text, words in zip(REAL_FAILURES, ["Internal compiler error. Aborting!", "Invalid model: heehoo.tflite"]):
        failed = parse_console(text)
        assert not failed.succeeded and words in failed.failure()


@pytest.fixture()
def compiler_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put a stand-in edgetpu_compiler of the given mode first on PATH."""
    pytest.importorskip("edge_vad_export.tflite_model", reason="the stand-in compiler counts ops with the export extra")
    pytest.importorskip("ai_edge_litert.schema_py_generated", reason="the stand-in compiler reads models with ai-edge-litert")

    def install(mode: str) -> Path:
        bin_dir = tmp_path / f"bin-{mode}"
        install_compiler(bin_dir, mode)
        monkeypatch.setenv("PATH", path_with(bin_dir))
        return bin_dir

    return install


def _hashes(folder: Path) -> Dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def test_full_compile_adds_an_edgetpu_target_and_verifies(compiler_bin, tmp_path: Path) -> None:
    compiler_bin("full")
    before = _hashes(default_bundle_dir())
    report = compile_bundle("default", tmp_path / "coral")
    manifest = report.manifest
    source = verify_bundle("default").manifest
    assert _hashes(default_bundle_dir()) == before  # the input is read, never written
    target = manifest.targets["edgetpu"]
    assert target.backends == ["edgetpu"]
    assert target.artifacts == ["coarse_backbone_int8_edgetpu", "qacm_int8_edgetpu", "fine_head", "fine_describer",
                                "text_table"]
    for name in ("coarse_backbone_int8", "qacm_int8"):
        art = manifest.artifacts[f"{name}_edgetpu"]
        rec = art.edgetpu_compile
        assert art.file == f"{name}_edgetpu.tflite" and art.format == "tflite" and art.precision == "int8"
        assert art.bytes == (tmp_path / "coral" / art.file).stat().st_size and art.sha256 == sha256_file(tmp_path / "coral" / art.file)
        assert art.inputs == source.artifacts[name].inputs and art.stage == source.artifacts[name].stage
        # The compiler's counts are the model's own ops (the export recorded the same histogram).
        hist = source.artifacts[name].conversion["op_histogram"]
        assert rec.operations_total == rec.operations_on_tpu == sum(hist.values()) and rec.fully_mapped
        assert {o.operator: o.count for o in rec.operations} == hist
        assert rec.compiler_version == "16.0.384591198" and rec.subgraphs == 1 and rec.off_chip_bytes == 0
        assert 0 < rec.on_chip_bytes < 8 * 2 ** 20
        assert rec.lint_prediction["passed"] and rec.lint_prediction["operations"] == sum(hist.values())
        assert rec.source_artifact == name and rec.co_compiled == [n for n in ("coarse_backbone_int8", "qacm_int8")
                                                                   if n != name]
    assert manifest.tools["edgetpu_compiler"] == "16.0.384591198"
    assert set(source.artifacts) < set(manifest.artifacts) and source.targets["tflite-int8"] == manifest.targets["tflite-int8"]
    with pytest.raises(EdgeVadError, match="already has Edge TPU models"):
        compile_bundle(tmp_path / "coral", tmp_path / "again")


def test_partial_mapping_is_allowed_recorded_and_reported(compiler_bin, tmp_path: Path) -> None:
    from edge_vad.cli.compile_cmd import compile_edgetpu

    compiler_bin("partial")
    console = Console(record=True, width=400)
    report = compile_edgetpu("default", tmp_path / "coral", console=console)
    rec = report.manifest.artifacts["coarse_backbone_int8_edgetpu"].edgetpu_compile
    hist = report.manifest.artifacts["coarse_backbone_int8"].conversion["op_histogram"]
    on_cpu = hist["MEAN"] + hist.get("FULLY_CONNECTED", 0)  # the stand-in's partial mode leaves these on the CPU
    assert (rec.operations_on_cpu, rec.operations_on_tpu) == (on_cpu, sum(hist.values()) - on_cpu)
    assert not rec.fully_mapped and rec.lint_prediction["passed"]  # the lint predicted all: the report says both
    assert report.manifest.artifacts["qacm_int8_edgetpu"].edgetpu_compile.fully_mapped
    text = console.export_text()
    assert f"PARTIAL: {sum(hist.values()) - on_cpu} of {sum(hist.values())} operations on the Edge TPU" in text
    assert "MEAN x2 (Operation is otherwise supported, but not mapped" in text and "bundle " in text and ": OK" in text


@pytest.mark.parametrize("mode, words", [("internal-error", "Internal compiler error. Aborting!"),
                                         ("not-quantized", "Invalid model:"),
                                         ("none", "mapped none of the")])
def test_a_failed_compile_leaves_the_input_untouched_and_writes_nothing(compiler_bin, tmp_path: Path, mode: str,
                                                                       words: str) -> None:
    import shutil

    compiler_bin(mode)
    src = Path(shutil.copytree(default_bundle_dir(), tmp_path / "src"))
    before = _hashes(src)
    out = tmp_path / "out" / "coral"
    with pytest.raises(EdgeVadError) as err:
        compile_bundle(src, out)
    assert words in str(err.value) and "\n" not in str(err.value) and "input bundle is unchanged" in str(err.value)
    assert _hashes(src) == before
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []  # no half-written or temporary folder


def test_missing_compiler_is_one_line_naming_where_to_get_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-c", "from edge_vad.cli import main; main()", "models", "compile-edgetpu",
                           "default", "--out", str(tmp_path / "coral")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": str(empty)})
    assert proc.returncode == MISSING_COMPILER_EXIT == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edge-vad: error: edgetpu_compiler not found on PATH"), proc.stderr
    for words in ("x86-64 Debian/Ubuntu", "deb https://packages.cloud.google.com/apt coral-edgetpu-stable main",
                  "apt-get install edgetpu-compiler"):
        assert words in lines[0]
    assert not (tmp_path / "coral").exists()


def test_out_must_not_be_the_input(compiler_bin, tmp_path: Path) -> None:
    import shutil

    compiler_bin("full")
    src = Path(shutil.copytree(default_bundle_dir(), tmp_path / "src"))
    with pytest.raises(EdgeVadError, match="--out must be a new folder"):
        compile_bundle(src, src, force=True)
