"""The CPU path (issue 16): int8 TFLite where the bundle's parity record says int8 matches fp32, fp32 ONNX otherwise,
and --precision / [runtime] precision overriding both; every choice says why in its one log line."""

from __future__ import annotations

import json
from typing import Optional

import pytest

from edge_vad.backends import BackendStatus
from edge_vad.bundle import default_bundle_dir, load_manifest, parse_manifest
from edge_vad.errors import EdgeVadError, MissingDependency
from edge_vad.runtime.backend_choice import HostProbe, choose_backend, int8_parity


def _host(missing=()) -> HostProbe:
    def status(name: str) -> BackendStatus:
        ok = name not in missing and name not in ("tensorrt", "edgetpu")
        return BackendStatus(name, ok, "" if ok else f"{name} not installed", "" if ok else f"install {name}")

    def never(device: Optional[str]) -> Optional[str]:
        raise AssertionError("no Edge TPU probe for a bundle without compiled models")

    return HostProbe(status, never)


def _manifest(parity_pass: bool = True, drop_parity: bool = False):
    data = json.loads(load_manifest(default_bundle_dir()).to_json())
    for name in data["targets"]["tflite-int8"]["artifacts"]:
        art = data["artifacts"][name]
        if art["precision"] != "int8":
            continue
        if drop_parity:
            art["parity"] = {}
        elif not parity_pass:
            check = next(iter(art["parity"].values()))
            check["value"] = check["tolerance"] * (0.5 if check["compare"] == ">=" else 2.0)
            check["pass"] = False
    return parse_manifest(data, "test")


def test_int8_runs_on_a_cpu_when_its_parity_passed() -> None:
    ok, why = int8_parity(_manifest())
    assert ok and why.startswith("int8 parity passed (")
    choice = choose_backend(_manifest(), None, _host())
    assert (choice.target, choice.backend) == ("tflite-int8", "tflite")
    assert "int8 parity passed" in choice.line() and "\n" not in choice.line()


def test_a_failed_or_missing_parity_record_keeps_fp32() -> None:
    for manifest, words in ((_manifest(parity_pass=False), "int8 parity failed: "),
                            (_manifest(drop_parity=True), "int8 parity not recorded for ")):
        choice = choose_backend(manifest, None, _host())
        assert (choice.target, choice.backend) == ("onnx", "onnxruntime")
        assert f"int8 not preferred: {words}" in choice.line()


def test_precision_overrides_the_parity_rule() -> None:
    fp32 = choose_backend(_manifest(), None, _host(), precision="fp32")
    assert (fp32.target, fp32.backend) == ("onnx", "onnxruntime") and "precision fp32 asked for" in fp32.line()
    int8 = choose_backend(_manifest(parity_pass=False), None, _host(), precision="int8")
    assert (int8.target, int8.backend) == ("tflite-int8", "tflite") and "precision int8" in int8.line()
    fp16 = choose_backend(_manifest(), None, _host(), precision="fp16")
    assert fp16.backend == "onnxruntime" and "fp16 is a TensorRT precision" in fp16.line()


def test_int8_asked_for_without_an_interpreter_is_one_error_not_a_silent_fp32() -> None:
    with pytest.raises(MissingDependency, match="precision int8 on a CPU needs the TFLite interpreter"):
        choose_backend(_manifest(), None, _host(missing=("tflite",)), precision="int8")
    with pytest.raises(EdgeVadError, match="unknown precision"):
        choose_backend(_manifest(), None, _host(), precision="bf16")


def test_without_the_interpreter_the_cpu_falls_back_to_fp32_and_says_why() -> None:
    choice = choose_backend(_manifest(), None, _host(missing=("tflite",)))
    assert choice.backend == "onnxruntime" and "tflite: tflite not installed" in choice.line()


def test_models_backends_says_what_run_would_choose_and_why() -> None:
    from rich.console import Console

    from edge_vad.cli.backends_cmd import list_backends

    console = Console(record=True, width=400)
    assert list_backends(console) == 0
    lines = [line for line in console.export_text().splitlines() if line.startswith("run would choose, for ")]
    assert len(lines) == 1 and "backend " in lines[0] and "(bundle target " in lines[0], lines
