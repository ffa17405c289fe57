"""The TensorRT path end to end on NVIDIA doubles that enforce CUDA's per-thread context rule and TensorRT's
documented limits (edge_vad_test_support.fake_nvidia): a bundle from the real exporter with the `tensorrt`
target, its engines built at every precision by the builder double, and the real `edge-vad run` threading
(models loaded in the main thread, one pipeline thread per source) on the sample stream.

Nothing here ran on NVIDIA hardware; docs/jetson.md lists what is checked only against documentation.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from edge_vad.bundle import load_manifest
from edge_vad.config import RuntimeConfig
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad.runtime.loaded_models import load_models
from edge_vad_test_support import bundles, fake_nvidia

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "benchmarks" / "data" / "sample-stream.mp4"
SAMPLE_FRAMES = 684  # benchmarks/data/sample-stream.json


@pytest.fixture(scope="module")
def trt_bundle(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    return bundles.exported_trt_bundle(tmp_path_factory, shared_data)


def test_exported_tensorrt_target_builds_at_fp16_and_int8_on_the_builder_double(
        trt_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = load_manifest(trt_bundle)
    build = manifest.targets["tensorrt"].tensorrt
    assert build is not None and build.onnx_artifacts == ["coarse_backbone", "qacm"]
    assert (build.precision, build.opset, build.min_tensorrt) == ("fp16", 13, "8.0")
    assert build.calibration_artifact == "tensorrt_calibration" and build.reference is not None
    monkeypatch.setenv("EDGE_VAD_TRT_CACHE", str(tmp_path / "trt"))
    # JetPack 4.6.1 on a Xavier NX: TensorRT 8.2.1, whose ONNX parser reads opset 13 at most
    gpu = fake_nvidia.FakeGpu("Xavier", (7, 2))
    trt = fake_nvidia.install(monkeypatch, gpu, "cuda-python", version="8.2.1")
    calibrated = {}
    for precision in ("fp16", "int8"):
        plan = plan_backends(manifest, trt_bundle, "tensorrt", RuntimeConfig(precision=precision), fine=False)
        models = load_models(trt_bundle, manifest, plan)
        try:
            for stage in ("coarse_backbone", "coarse_head"):
                backend = models.get(stage).backend
                assert backend.name == "tensorrt"
                if backend.built_now:
                    assert backend.checks and all(r.passed for r in backend.checks), backend.checks
            calib = plan.stage("coarse_backbone").options.get("calibration")
            if calib is not None:
                calibrated[precision] = (calib.batch_shape, calib.batches_done)
        finally:
            models.close()
    assert calibrated == {"int8": ((1, 3, 224, 224), 64)}  # every shipped frame, batch 1 = the engine's input
    assert [b[1] for b in trt.builds] == [("FP16",), ("FP16",), ("FP16", "INT8")]  # qacm's fp16 engine reused
    assert gpu.violations == [] and trt.log == [] and gpu.mem == {}

    nano = fake_nvidia.FakeGpu("NVIDIA Tegra X1", (5, 3))  # Jetson Nano: Maxwell, no fast int8
    fake_nvidia.install(monkeypatch, nano, "pycuda", version="8.2.1")
    plan = plan_backends(manifest, trt_bundle, "tensorrt", RuntimeConfig(precision="int8"), fine=False)
    with pytest.raises(EdgeVadError, match=r"this GPU \(NVIDIA Tegra X1 sm53\) has no fast int8"):
        load_models(trt_bundle, manifest, plan)
    assert nano.mem == {} and nano.violations == []


def _notifications(sock: socket.socket) -> list:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out


# The whole sample stream through cuda-python (the preferred binding); pycuda on every 8th frame of it without
# the fine stage (the same threads around the TensorRT engines, a fraction of the test time).
@pytest.mark.parametrize("binding, stride", [("cuda-python", 1), ("pycuda", 8)])
def test_run_pipeline_threads_are_served_by_the_engine_owner_threads(binding: str, stride: int, trt_bundle: Path,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `run`: models load in this thread, the pipeline runs in its own; with the old pycuda.autoinit
    backend the first copy from the pipeline thread failed with 'invalid device context' (docs/jetson.md)."""
    from edge_vad.runtime.runner import RunOptions, run

    gpu = fake_nvidia.FakeGpu("Orin", (8, 7))  # JetPack 6.0: TensorRT 8.6.2
    trt = fake_nvidia.install(monkeypatch, gpu, binding, version="8.6.2")
    monkeypatch.setenv("EDGE_VAD_TRT_CACHE", str(tmp_path / "trt"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    config = tmp_path / "config.toml"
    config.write_text("[fine]\nenabled = false\n" if stride > 1 else "")
    try:
        summary = run(RunOptions(source=str(SAMPLE), bundle=trt_bundle, backend="tensorrt", no_http=True, config=config,
                                 stride=stride, report=tmp_path / "report", events_dir=tmp_path / "events"))
        sent = _notifications(sock)
    finally:
        sock.close()
    [result] = summary.results
    expected = -(-SAMPLE_FRAMES // stride)
    assert result.error is None and result.frames_scored == expected
    assert [line.split(":")[0] for line in summary.backends[:2]] == ["coarse_backbone", "coarse_head"]
    assert all("tensorrt" in line for line in summary.backends[:2])
    # every engine ran on its owner thread; no CUDA or TensorRT rule was broken anywhere
    assert set(gpu.executions) == {"tensorrt-coarse_backbone", "tensorrt-qacm"}
    assert gpu.executions["tensorrt-coarse_backbone"] >= expected
    assert gpu.violations == [] and trt.log == []
    assert gpu.mem == {} and gpu.streams == {} and gpu.retains == 0
    # the start was extended while the engines were built, before READY=1
    ready = sent.index("READY=1")
    assert "EXTEND_TIMEOUT_USEC=90000000" in sent[:ready], sent[:ready + 1]
    scores = np.loadtxt(tmp_path / "report" / "scores.csv", delimiter=",", skiprows=1, usecols=2)  # coarse_score
    assert len(scores) == expected and np.all((scores >= 0) & (scores <= 1)) and scores.std() > 0
