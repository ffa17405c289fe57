"""Backend selection with the Coral runtime present: the Edge TPU is chosen only when the bundle has compiled models
AND the delegate really loads; otherwise the CPU path runs and ONE INFO line says why.

Coral's libedgetpu is not obtainable here (not in Debian, not on PyPI). The tests use (a) a delegate loader that
raises the real message, `ValueError: Failed to load delegate from libedgetpu.so.1` (what Coral's own library gives
with no TPU attached, checked with its frogfish build and ai-edge-litert 2.3), and (b) a stand-in libedgetpu.so.1
built from edge_vad_test_support/libedgetpu_standin.c and loaded through the REAL ai-edge-litert `load_delegate`,
so the interpreter library itself raises that error, and the interpreter really runs a model with the delegate.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np
import pytest

from edge_vad.backends import BackendStatus
from edge_vad.backends import edgetpu_runtime as etr
from edge_vad.bundle import default_bundle_dir, load_manifest, parse_manifest
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.backend_choice import HostProbe, choose_backend, live_edgetpu
from edge_vad_test_support import bundles
from edge_vad_test_support.edgetpu_standin import TPUS_ENV, build_libedgetpu, install_compiler, path_with

# the shipped bundle's int8 parity passed, so a CPU runs its int8 models (edge_vad.runtime.backend_choice, step 3)
CPU_CHOICE = ("tflite-int8", "tflite")
REAL_NO_TPU = "Failed to load delegate from libedgetpu.so.1\n"  # str(ValueError) of load_delegate, no TPU attached


def _compiled_manifest():
    """The shipped manifest plus compiled copies of its int8 models and an `edgetpu` target (no files needed)."""
    data = json.loads(load_manifest(default_bundle_dir()).to_json())
    for name in ("coarse_backbone_int8", "qacm_int8"):
        art = dict(data["artifacts"][name], file=f"{name}_edgetpu.tflite", edgetpu_lint=None, edgetpu_compile={
            "source_artifact": name, "compiler_version": "16.0.384591198", "subgraphs": 1, "operations_total": 5,
            "operations_on_tpu": 5, "operations_on_cpu": 0, "on_chip_bytes": 1000, "off_chip_bytes": 0})
        data["artifacts"][f"{name}_edgetpu"] = art
    data["targets"]["edgetpu"] = {"backends": ["edgetpu"], "artifacts": [
        "coarse_backbone_int8_edgetpu", "qacm_int8_edgetpu", "fine_head", "text_table"]}
    return parse_manifest(data, "test")


def _host(edgetpu=None, missing=()) -> HostProbe:
    def status(name: str) -> BackendStatus:
        if name in missing:
            return BackendStatus(name, False, f"{name} not installed", "pip install it")
        return BackendStatus(name, name != "tensorrt", "" if name != "tensorrt" else "tensorrt not installed", "")

    def never(device: Optional[str]) -> Optional[str]:
        raise AssertionError("the Edge TPU must not be probed for a bundle without compiled models")

    return HostProbe(status, edgetpu or never)


@pytest.fixture()
def fake_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etr, "edgetpu_library_path", lambda: "libedgetpu.so.1")
    yield
    etr.release_probed()


def test_a_bundle_without_compiled_models_runs_on_the_cpu_with_libedgetpu_present() -> None:
    choice = choose_backend(load_manifest(default_bundle_dir()), None, _host())
    assert (choice.target, choice.backend) == CPU_CHOICE
    assert "Edge TPU not used: the bundle has no models compiled for it" in choice.line()
    assert "CPU: the TFLite interpreter runs the int8 models" in choice.line() and "\n" not in choice.line()


def test_the_real_delegate_error_falls_back_to_the_cpu_in_one_line(fake_library) -> None:
    calls: List[Any] = []

    def load_delegate(library: str, options: Dict[str, str]) -> Any:
        calls.append((library, options))
        raise ValueError(REAL_NO_TPU)

    choice = choose_backend(_compiled_manifest(), None, _host(lambda d: etr.probe_delegate(d, load_delegate)))
    assert (choice.target, choice.backend) == CPU_CHOICE
    line = choice.line()
    assert "Edge TPU not used: no Edge TPU found on USB or PCIe (Failed to load delegate from libedgetpu.so.1)" in line
    assert "\n" not in line and calls == [("libedgetpu.so.1", {})]


def test_the_edge_tpu_is_chosen_when_its_delegate_loads_and_opened_once(fake_library) -> None:
    loaded: List[object] = []

    def load_delegate(library: str, options: Dict[str, str]) -> Any:
        loaded.append(object())
        return loaded[-1]

    host = _host(lambda d: etr.probe_delegate(d, load_delegate))
    host.device = "usb:0"
    choice = choose_backend(_compiled_manifest(), None, host)
    assert (choice.target, choice.backend) == ("edgetpu", "edgetpu") and len(loaded) == 1
    assert etr.take_delegate("usb:0", load_delegate) is loaded[0]  # the probe's delegate, not a second open
    assert len(loaded) == 1
    etr.take_delegate("usb:0", load_delegate)  # the next interpreter gets its own
    assert len(loaded) == 2


def test_a_pair_reported_to_fail_is_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_vad.backends.coral_pairs import LibedgetpuBuild, check_pair

    verdict = check_pair(LibedgetpuBuild("coral-16.0", "libedgetpu 16.0 (libedgetpu1-std, Coral's apt release)",
                                         (2, 5)), "tflite-runtime", "2.14.0")
    monkeypatch.setattr(etr, "edgetpu_interpreter", lambda *a: ("tflite_runtime", verdict))
    monkeypatch.setattr(etr, "probe_delegate", lambda *a: pytest.fail("probed a pair reported to segfault"))
    choice = choose_backend(_compiled_manifest(), None, _host(live_edgetpu))
    assert choice.backend == CPU_CHOICE[1]
    assert "tflite-runtime 2.14.0 with libedgetpu 16.0" in choice.line() and "reported to fail" in choice.line()


def test_explicit_edgetpu_that_cannot_run_is_one_line_with_the_fix(fake_library) -> None:
    with pytest.raises(EdgeVadError) as err:
        choose_backend(load_manifest(default_bundle_dir()), "edgetpu", _host())
    assert err.value.exit_code == 3 and "models compile-edgetpu" in str(err.value)

    def load_delegate(library: str, options: Dict[str, str]) -> Any:
        raise ValueError(REAL_NO_TPU)

    with pytest.raises(EdgeVadError) as err:
        choose_backend(_compiled_manifest(), "edgetpu", _host(lambda d: etr.probe_delegate(d, load_delegate)))
    text = str(err.value)
    assert err.value.exit_code == 3 and "\n" not in text
    assert text.startswith("--backend edgetpu cannot run: no Edge TPU found on USB or PCIe (Failed to load delegate")
    assert "plug the Coral accelerator in" in text and "drop --backend to run on the CPU" in text


def test_with_precision_fp32_and_no_onnxruntime_the_cpu_runs_int8_tflite() -> None:
    choice = choose_backend(load_manifest(default_bundle_dir()), None, _host(missing=("onnxruntime",)), "fp32")
    assert (choice.target, choice.backend) == ("tflite-int8", "tflite")
    assert "onnxruntime: onnxruntime not installed" in choice.line() and "CPU: the TFLite interpreter" in choice.line()


# ------------------------------------------------------------------ the real interpreter with a stand-in libedgetpu
@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("ai_edge_litert.interpreter", reason="needs ai-edge-litert (the coral or export extra)")
    return build_libedgetpu(tmp_path_factory.mktemp("libedgetpu"))


def _created(lib: Path) -> int:
    return ctypes.CDLL(str(lib)).standin_delegates_created()


def test_the_real_load_delegate_with_the_runtime_and_no_tpu(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(etr.LIBRARY_ENV, str(standin))
    monkeypatch.delenv(TPUS_ENV, raising=False)
    why = live_edgetpu(None)
    assert why == f"no Edge TPU found on USB or PCIe (Failed to load delegate from {standin}); plug the Coral " \
                  "accelerator in (lsusb lists 1a6e:089a or 18d1:9302) or pick another device"
    assert etr.list_devices() == ([], "libedgetpu (edgetpu_list_devices)")
    assert etr.runtime_number(etr.runtime_version()) == 14


def test_coral_own_libedgetpu_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Coral's real library, where someone points $EDGE_VAD_TEST_REAL_LIBEDGETPU at one (e.g. libedgetpu.so.1.0
    from Coral's apt package, or libedgetpu/direct/k8 of github.com/google-coral/edgetpu): the same one-line
    answer on a host without a TPU, its version and its device list through the C API."""
    real = os.environ.get("EDGE_VAD_TEST_REAL_LIBEDGETPU")
    if not real:
        pytest.skip("Coral's libedgetpu is not in Debian or on PyPI: set EDGE_VAD_TEST_REAL_LIBEDGETPU to one to run this")
    pytest.importorskip("ai_edge_litert.interpreter", reason="needs ai-edge-litert")
    monkeypatch.setenv(etr.LIBRARY_ENV, real)
    assert etr.runtime_number(etr.runtime_version()) in (13, 14)
    devices, how = etr.list_devices()
    assert how == "libedgetpu (edgetpu_list_devices)" and all(d.name[:4] in ("usb:", "pci:") for d in devices)
    if not devices:
        assert live_edgetpu(None).startswith(f"no Edge TPU found on USB or PCIe (Failed to load delegate from {real})")


def test_the_real_load_delegate_with_tpus(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(etr.LIBRARY_ENV, str(standin))
    monkeypatch.setenv(TPUS_ENV, "usb:/sys/bus/usb/devices/2-1,pci:/dev/apex_0")
    devices, how = etr.list_devices()
    assert [(d.name, d.path) for d in devices] == [("usb:0", "/sys/bus/usb/devices/2-1"), ("pci:0", "/dev/apex_0")]
    assert how == "libedgetpu (edgetpu_list_devices)"
    before = _created(standin)
    assert live_edgetpu("pci:0") is None and _created(standin) == before + 1
    from ai_edge_litert.interpreter import load_delegate

    etr.take_delegate("pci:0", load_delegate)  # the probe's: the device is not opened again
    assert _created(standin) == before + 1
    assert "no Edge TPU found at 'usb:1'" in live_edgetpu("usb:1")


def test_models_backends_lists_the_edge_tpus(standin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rich.console import Console

    from edge_vad.cli.backends_cmd import list_backends

    monkeypatch.setenv(etr.LIBRARY_ENV, str(standin))
    monkeypatch.setenv(TPUS_ENV, "usb:/sys/bus/usb/devices/2-1")
    console = Console(record=True, width=300)
    assert list_backends(console) == 0
    text = console.export_text()
    assert "Edge TPU devices (libedgetpu (edgetpu_list_devices)): usb:0 (/sys/bus/usb/devices/2-1)" in text
    assert "Edge TPU runtime pair (WARNING): ai-edge-litert" in text  # a stand-in pair is not one known to work
    # Without the library: sysfs (a fake root with a USB Accelerator before its firmware load, and an M.2 module).
    usb = tmp_path / "sys/bus/usb/devices/2-1"
    usb.mkdir(parents=True)
    (usb / "idVendor").write_text("1a6e\n")
    (usb / "idProduct").write_text("089a\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/apex_0").write_text("")
    found = etr.devices_from_sysfs(tmp_path)
    assert [(d.name, d.note) for d in found] == [
        ("usb:0", "1a6e:089a, firmware not loaded yet (the runtime loads it on first use)"),
        ("pci:0", "apex driver loaded")]


@pytest.fixture(scope="session")
def compiled_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped bundle compiled by the stand-in edgetpu_compiler (edge_vad_test_support/edgetpu_standin.py)."""
    pytest.importorskip("edge_vad_export.tflite_model", reason="the stand-in compiler counts ops with the export extra")
    from edge_vad.bundle.edgetpu_compile import compile_bundle

    root = tmp_path_factory.mktemp("compiled")
    install_compiler(root / "bin", "full")
    old = os.environ["PATH"]
    os.environ["PATH"] = path_with(root / "bin")
    try:
        return compile_bundle("default", root / "bundle").bundle
    finally:
        os.environ["PATH"] = old


def test_a_compiled_bundle_runs_through_the_edgetpu_backend(standin: Path, compiled_bundle: Path,
                                                            monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """The whole path with the real interpreter: choice -> probe -> EdgeTpuBackend with the probe's delegate; the
    stand-in delegate claims no node, so the model runs on the CPU and must give the int8 CPU backend's numbers."""
    import logging

    from edge_vad.backends import get_backend, tflite_backend
    from edge_vad.runtime.backend_plan import plan_backends
    from edge_vad.runtime.loaded_models import load_models

    monkeypatch.setenv(etr.LIBRARY_ENV, str(standin))
    monkeypatch.setenv(TPUS_ENV, "usb:/sys/bus/usb/devices/2-1")
    monkeypatch.setattr(tflite_backend, "_versions_logged", tflite_backend.threading.Event())
    manifest = load_manifest(compiled_bundle)
    before = _created(standin)
    with caplog.at_level(logging.INFO):
        plan = plan_backends(manifest, compiled_bundle, fine=False)
        models = load_models(compiled_bundle, manifest, plan)
    try:
        assert (plan.target, plan.backend) == ("edgetpu", "edgetpu")
        assert [s.backend for s in plan.stages] == ["edgetpu", "edgetpu"]
        assert _created(standin) == before + 2  # the probe's delegate went to the backbone; the head got one
        assert any("backend edgetpu (bundle target edgetpu): the Edge TPU delegate loaded" in r.message
                   for r in caplog.records)
        pair = [r for r in caplog.records if r.message.startswith("edgetpu: ai-edge-litert")]
        assert len(pair) == 1 and pair[0].levelno == logging.WARNING and "RuntimeVersion(14)" in pair[0].message
        image = np.random.default_rng(0).integers(-128, 128, (1, 224, 224, 3), dtype=np.int8)
        tpu = models.get("coarse_backbone").backend
        assert tpu.name == "edgetpu" and tpu.model_path.name == "coarse_backbone_int8_edgetpu.tflite"
        got = tpu.infer({tpu.inputs[0].name: image}, raw=True)
        with get_backend("tflite").load(compiled_bundle / "coarse_backbone_int8.tflite") as cpu:
            want = cpu.infer({cpu.inputs[0].name: image}, raw=True)
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    finally:
        models.close()
    monkeypatch.delenv(TPUS_ENV)
    plan = plan_backends(manifest, compiled_bundle, fine=False)
    assert plan.backend == CPU_CHOICE[1] and "Failed to load delegate from" in "; ".join(plan.reasons)


# ------------------------------------------------------------------ the README's first command, Coral runtime present
def _readme_run(source: Path, out: Path, lib_dir: Path, bundle: Optional[Path] = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LD_LIBRARY_PATH": f"{lib_dir}{os.pathsep}{os.environ.get('LD_LIBRARY_PATH', '')}"}
    env.pop(etr.LIBRARY_ENV, None)
    env.pop(TPUS_ENV, None)
    args = ["run", "--source", str(source), "--report", str(out / "report"), "--no-http", "--events-dir", str(out / "ev")]
    return subprocess.run([sys.executable, "-c", "from edge_vad.cli import main; main()", *args,
                           *(["--bundle", str(bundle)] if bundle else [])],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(out))


def test_readme_first_command_with_libedgetpu_and_no_tpu(standin: Path, compiled_bundle: Path, tmp_path: Path) -> None:
    """`edge-vad run --source benchmarks/data/sample-stream.mp4 --report out/` on its first 2.4 s (--no-http and an
    events folder under tmp so parallel tests do not collide), with libedgetpu.so.1 on the library path: exit 0,
    and the log says which path it took and why."""
    cap = cv2.VideoCapture(str(Path(__file__).resolve().parents[2] / "benchmarks/data/sample-stream.mp4"))
    frames = [cap.read()[1] for _ in range(60)]
    cap.release()
    clip = bundles.write_video(tmp_path / "sample-2.4s.mp4", frames, 25.0)
    proc = _readme_run(clip, tmp_path, standin.parent)
    assert proc.returncode == 0, proc.stderr
    assert "backend tflite (bundle target tflite-int8): " in proc.stderr
    assert "Edge TPU not used: the bundle has no models compiled for it" in proc.stderr
    assert (tmp_path / "report" / "scores.csv").is_file() and "Traceback" not in proc.stderr
    # The same with a bundle that has compiled models: the delegate's own message, then the CPU.
    proc = _readme_run(clip, tmp_path, standin.parent, compiled_bundle)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "backend tflite (bundle target tflite-int8)" in x)
    assert "Edge TPU not used: no Edge TPU found on USB or PCIe (Failed to load delegate from libedgetpu.so.1)" in line
