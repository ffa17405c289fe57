"""The Jetson-facing settings around the TensorRT backend: precision in config and on the CLI, the reference
check's metrics, the EXTEND_TIMEOUT_USEC thread, onnxruntime's TensorRT EP options, and `models build-engines`
(on the NVIDIA doubles)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from edge_vad.backends.engine_check import EngineMismatch, EngineReference, spearman
from edge_vad.config import load_config, with_precision
from edge_vad.errors import ConfigError
from edge_vad.runtime import sdnotify
from edge_vad_test_support import bundles, fake_nvidia


def test_precision_in_config_and_on_the_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[runtime]\nprecision = "int8"\n')
    assert load_config(cfg).runtime.precision == "int8"
    assert with_precision(load_config(cfg), "fp32").runtime.precision == "fp32"
    assert with_precision(load_config(cfg), None).runtime.precision == "int8"
    with pytest.raises(ConfigError, match=r"--precision 'fp8': choose one of fp32, fp16, int8"):
        with_precision(load_config(None), "fp8")
    cfg.write_text('[runtime]\nprecision = "fp8"\n')
    with pytest.raises(ConfigError, match=r"runtime.precision = 'fp8'"):
        load_config(cfg)


def test_a_bad_precision_on_the_cli_is_one_line(capsys: pytest.CaptureFixture) -> None:
    from edge_vad.cli import main

    with pytest.raises(SystemExit) as done:
        main(["run", "--source", "benchmarks/data/sample-stream.mp4", "--precision", "fp8", "--no-http"])
    err = capsys.readouterr().err
    assert done.value.code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == ["edge-vad: error: --precision 'fp8': choose one of fp32, fp16, int8"]


def test_reference_metrics_pass_fail_and_name_the_worst() -> None:
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(size=(1, 8)).astype(np.float32)} for _ in range(6)]
    expected = [{"f": f["x"] * 2, "logit": f["x"][:, :1]} for f in feeds]
    ref = EngineReference("g.onnx", feeds, expected, score_outputs=("logit",))
    exact = ref.check(lambda feed: {"f": feed["x"] * 2, "logit": feed["x"][:, :1]}, "fp32")
    assert {r.metric for r in exact} == {"cosine_min", "max_rel_diff", "score_max_abs_diff", "score_rank_corr_min"}
    with pytest.raises(EngineMismatch, match=r"fp16 engine built from g.onnx .*logit score_rank_corr_min -1 "):
        ref.check(lambda feed: {"f": feed["x"] * 2, "logit": -feed["x"][:, :1]}, "fp16")  # ranking reversed
    assert spearman(np.arange(5), np.arange(5) ** 3) == pytest.approx(1.0)
    assert spearman(np.ones(5), np.arange(5)) is None and spearman(np.arange(2), np.arange(2)) is None


def test_startup_extender_keeps_extending_until_done_and_is_capped(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "n.sock"))
    sock.settimeout(5)
    env = {"NOTIFY_SOCKET": str(tmp_path / "n.sock")}
    with sock:
        with sdnotify.StartupExtender(extend_s=0.2, every_s=0.05, env=env, status_text="building") as ext:
            deadline = time.monotonic() + 5
            while ext.sent < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert ext.sent >= 3
        first = [sock.recv(256) for _ in range(ext.sent + 1)]
        assert first[0] == b"STATUS=building" and set(first[1:]) == {b"EXTEND_TIMEOUT_USEC=200000"}
        with sdnotify.StartupExtender(extend_s=0.2, every_s=0.05, max_total_s=0.1, env=env) as capped:
            time.sleep(0.2)
        assert capped.sent == 0  # one extension would already pass the cap
    with sdnotify.StartupExtender(env={}) as idle:  # outside systemd: no thread, nothing sent
        pass
    assert idle.sent == 0


def test_onnxruntime_tensorrt_ep_gets_engine_cache_and_fp16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    from edge_vad.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge_vad_test_support.onnx_graphs import matmul_onnx_file

    seen = {}
    real_session = ort.InferenceSession

    def session(path, sess_options=None, providers=None):  # record, then run on the CPU provider
        seen["providers"] = providers
        return real_session(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    model = matmul_onnx_file(tmp_path / "m.onnx")
    OnnxRuntimeBackend().load(model, tensorrt_fp16=False, tensorrt_cache_dir=tmp_path / "ep").close()
    trt_ep, cuda_ep, cpu_ep = seen["providers"]
    assert trt_ep == ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                                    "trt_engine_cache_path": str(tmp_path / "ep"),
                                                    "trt_fp16_enable": False})
    assert (cuda_ep, cpu_ep) == ("CUDAExecutionProvider", "CPUExecutionProvider") and (tmp_path / "ep").is_dir()
    monkeypatch.setenv("EDGE_VAD_TRT_CACHE", str(tmp_path / "trt"))
    OnnxRuntimeBackend().load(model).close()
    assert seen["providers"][0][1]["trt_engine_cache_path"] == str(tmp_path / "trt" / "onnxruntime")
    assert seen["providers"][0][1]["trt_fp16_enable"] is True


def test_build_engines_command_builds_checks_then_finds_them_cached(tmp_path_factory: pytest.TempPathFactory,
                                                                   shared_data: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    from edge_vad.cli import main

    bundle = bundles.exported_trt_bundle(tmp_path_factory, shared_data)
    gpu = fake_nvidia.FakeGpu("Orin", (8, 7))
    trt = fake_nvidia.install(monkeypatch, gpu, "cuda-python", version="10.3.0")  # JetPack 6.1
    monkeypatch.setenv("EDGE_VAD_TRT_CACHE", str(tmp_path / "trt"))
    for attempt in ("build", "cached"):
        with pytest.raises(SystemExit) as done:
            main(["models", "build-engines", str(bundle), "--precision", "fp16"])
        assert done.value.code in (0, None)
        lines = capsys.readouterr().out.strip().splitlines()
        assert [line.split(":")[0] for line in lines] == ["coarse_backbone.onnx", "qacm.onnx"]
        if attempt == "build":
            assert all("fp16 engine built in" in line and "matches the reference" in line for line in lines), lines
        else:
            assert all("fp16 engine already cached at" in line for line in lines), lines
    assert len(trt.builds) == 2 and gpu.violations == []
    import json
    import shutil

    onnx_only = tmp_path / "onnx-only"  # the same bundle with its tensorrt target taken out of the manifest
    shutil.copytree(bundle, onnx_only)
    manifest = json.loads((onnx_only / "manifest.json").read_text())
    del manifest["targets"]["tensorrt"]
    (onnx_only / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit) as refused:
        main(["models", "build-engines", str(onnx_only)])
    assert refused.value.code == 1 and "has no tensorrt target" in capsys.readouterr().err
