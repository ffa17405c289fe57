"""Inference backends: registry, feed checks, (de)quantisation, onnxruntime end to end, TFLite /
Edge TPU / TensorRT where their libraries exist, and the TensorRT engine cache and int8
calibration batching everywhere (pure numpy)."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_vad.backends import (REGISTRY, available_backends, backend_status, best_backend, dequantize, get_backend,
                               quantize)
from edge_vad.backends.base import TensorSpec, check_feeds
from edge_vad.backends.onnxruntime_backend import OnnxRuntimeBackend, default_providers
from edge_vad.backends.tensorrt_backend import CalibrationBatcher, TensorRTBackend
from edge_vad.backends.tflite_backend import (EdgeTpuBackend, edgetpu_library_path, make_edgetpu_delegate,
                                              validate_edgetpu_device)
from edge_vad.backends.trt_engine_cache import EngineCache, EngineKey, atomic_write_bytes, default_cache_dir
from edge_vad.errors import EdgeVadError, MissingDependency

try:  # building test models needs onnx (the export extra); tests without a model run regardless
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    onnx = None


def _need_onnx() -> None:
    if onnx is None:
        pytest.skip("building test models needs onnx (pip install 'edge-vad[export]')")


RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3)).astype(np.float32)
B = RNG.normal(size=(3,)).astype(np.float32)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _save(graph: "onnx.GraphProto", path: Path) -> Path:
    _need_onnx()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def matmul_onnx(tmp_path: Path) -> Path:
    """y = x @ W + b with a dynamic batch dimension."""
    _need_onnx()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "matmul_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )
    return _save(graph, tmp_path / "matmul.onnx")


SX, ZX, SY, ZY = 0.05, 128, 0.1, -3  # uint8 input, int8 output


@pytest.fixture()
def quant_onnx(tmp_path: Path) -> Path:
    """uint8 x -> DequantizeLinear -> MatMul W -> QuantizeLinear -> int8 y (a QDQ model with int8 I/O)."""
    _need_onnx()
    inits = [numpy_helper.from_array(W, "W"),
             numpy_helper.from_array(np.array(SX, np.float32), "sx"), numpy_helper.from_array(np.array(ZX, np.uint8), "zx"),
             numpy_helper.from_array(np.array(SY, np.float32), "sy"), numpy_helper.from_array(np.array(ZY, np.int8), "zy")]
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
         helper.make_node("MatMul", ["xf", "W"], ["yf"]),
         helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"])],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [2, 3])],
        inits,
    )
    return _save(graph, tmp_path / "qdq.onnx")


# ---------------------------------------------------------------------------------- registry
def test_available_backends_lists_every_registered_name_with_reasons() -> None:
    statuses = available_backends()
    assert [s.name for s in statuses] == list(REGISTRY) == ["onnxruntime", "tensorrt", "tflite", "edgetpu"]
    for s in statuses:
        if not s.available:
            assert s.reason and s.detail, s  # says why, and what to install
    assert backend_status("onnxruntime").available  # a base dependency
    assert "onnxruntime" in backend_status("onnxruntime").detail


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(EdgeVadError, match=r"unknown backend 'cuda'.*onnxruntime"):
        get_backend("cuda")


@pytest.mark.skipif(_has("tensorrt"), reason="tensorrt is installed here")
def test_asking_for_tensorrt_without_it_names_jetpack(matmul_onnx: Path) -> None:
    status = backend_status("tensorrt")
    assert not status.available and "tensorrt not installed" in status.reason
    with pytest.raises(MissingDependency, match="JetPack") as err:
        get_backend("tensorrt")
    assert err.value.exit_code == 3 and "\n" not in str(err.value)
    # the class itself, used directly, fails the same way (the import is lazy, at load)
    with pytest.raises(MissingDependency, match="python3-libnvinfer"):
        TensorRTBackend().load(matmul_onnx, precision="fp32")
    with pytest.raises(EdgeVadError, match="precision 'fp8'"):
        TensorRTBackend().load(matmul_onnx, precision="fp8")


def test_best_backend_takes_the_first_available() -> None:
    unavailable = [s.name for s in available_backends() if not s.available]
    backend = best_backend(unavailable + ["onnxruntime", "tflite"])
    assert backend.name == "onnxruntime" and not backend.loaded
    if unavailable:
        with pytest.raises(MissingDependency, match="edge-vad models backends") as err:
            best_backend(unavailable)
        assert err.value.exit_code == 3


def test_runtime_backends_never_import_torch() -> None:
    code = ("import sys, edge_vad.backends as b, edge_vad.backends.onnxruntime_backend, "
            "edge_vad.backends.tflite_backend, edge_vad.backends.tensorrt_backend, edge_vad.cli.backends_cmd; "
            "b.available_backends(); bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_list_backends_prints_every_backend() -> None:
    from rich.console import Console

    from edge_vad.cli.backends_cmd import list_backends

    buf = io.StringIO()
    assert list_backends(Console(file=buf, width=250)) == 0
    text = buf.getvalue()
    for name in REGISTRY:
        assert name in text
    if not backend_status("tflite").available:
        assert "edge-vad[coral]" in text  # rich markup must not eat the extra's brackets


# ------------------------------------------------------------------------- (de)quantisation
def test_quantize_golden_values_and_clipping() -> None:
    x = np.array([0.0, 0.25, 0.75, -0.75, 1.0, 1000.0, -1000.0], np.float32)
    # x / 0.5 = 0, 0.5, 1.5, -1.5, 2 -> ties to even: 0, 0, 2, -2, 2; then + zp; then clip
    assert quantize(x, 0.5, 0, "int8").tolist() == [0, 0, 2, -2, 2, 127, -128]
    assert quantize(x, 0.5, 128, "uint8").tolist() == [128, 128, 130, 126, 130, 255, 0]
    assert quantize(x, 0.5, 0, "int8").dtype == np.int8 and quantize(x, 0.5, 3, "uint8").dtype == np.uint8


@pytest.mark.parametrize("dtype,scale,zp", [("int8", 0.1, -3), ("int8", 0.02, 0), ("uint8", 0.05, 128), ("uint8", 1 / 255, 0)])
def test_quantize_dequantize_round_trip(dtype: str, scale: float, zp: int) -> None:
    info = np.iinfo(dtype)
    q = np.arange(info.min, info.max + 1).astype(dtype)
    # every representable value survives dequantize -> quantize exactly
    assert np.array_equal(quantize(dequantize(q, scale, zp), scale, zp, dtype), q)
    # inside the range, float -> int -> float is off by at most half a step
    lo, hi = (info.min - zp) * scale, (info.max - zp) * scale
    x = np.linspace(lo, hi, 1001, dtype=np.float32)
    back = dequantize(quantize(x, scale, zp, dtype), scale, zp)
    assert back.dtype == np.float32
    assert np.max(np.abs(back - x)) <= scale / 2 * (1 + 1e-4)
    # outside it, values clip to the ends
    assert dequantize(quantize(np.array([hi + 10, lo - 10], np.float32), scale, zp, dtype), scale, zp) == \
        pytest.approx([hi, lo], abs=1e-5)


def test_quantize_rejects_bad_parameters() -> None:
    with pytest.raises(EdgeVadError, match="int8 or uint8"):
        quantize(np.zeros(2, np.float32), 0.1, 0, "int16")
    with pytest.raises(EdgeVadError, match="scale must be > 0"):
        quantize(np.zeros(2, np.float32), 0.0, 0, "int8")


def test_check_feeds_names_expected_and_found() -> None:
    specs = [TensorSpec("img", (1, 3, None, None), "float32"), TensorSpec("q", (2,), "int8", 0.1, 0)]
    ok = {"img": np.zeros((1, 3, 5, 7), np.float32), "q": np.zeros(2, np.float32)}
    check_feeds(ok, specs)
    check_feeds({**ok, "q": np.zeros(2, np.int8)}, specs, raw=True)
    with pytest.raises(EdgeVadError, match=r"\['img', 'q'\] but the feed has \['img', 'x'\]"):
        check_feeds({"img": ok["img"], "x": ok["q"]}, specs)
    with pytest.raises(EdgeVadError, match=r"'img': expected shape \(1, 3, \?, \?\), found \(1, 5, 5\)"):
        check_feeds({**ok, "img": np.zeros((1, 5, 5), np.float32)}, specs)
    with pytest.raises(EdgeVadError, match="'q': expected dtype float32, found int8.*raw=True"):
        check_feeds({**ok, "q": np.zeros(2, np.int8)}, specs)
    with pytest.raises(EdgeVadError, match="'q': expected dtype int8, found float32"):
        check_feeds(ok, specs, raw=True)


# ------------------------------------------------------------------------------ onnxruntime
def test_default_providers_prefer_tensorrt_then_cuda_then_cpu() -> None:
    avail = ["AzureExecutionProvider", "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    assert default_providers(avail) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert default_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_onnxruntime_matches_numpy(matmul_onnx: Path) -> None:
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    with get_backend("onnxruntime").load(matmul_onnx, threads=1) as backend:
        assert isinstance(backend, OnnxRuntimeBackend)
        assert backend.provider in ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider")
        assert backend.inputs == [TensorSpec("x", (None, 4), "float32")]
        assert backend.outputs == [TensorSpec("y", (None, 3), "float32")]
        out = backend.infer({"x": x})
        assert set(out) == {"y"} and out["y"].dtype == np.float32
        np.testing.assert_allclose(out["y"], x @ W + B, rtol=1e-5, atol=1e-5)
        with pytest.raises(EdgeVadError, match=r"inputs are \['x'\] but the feed has \['z'\]"):
            backend.infer({"z": x})
        with pytest.raises(EdgeVadError, match=r"'x': expected shape \(\?, 4\), found \(5, 3\)"):
            backend.infer({"x": x[:, :3]})
        with pytest.raises(EdgeVadError, match="'x': expected dtype float32, found float64"):
            backend.infer({"x": x.astype(np.float64)})
    assert not backend.loaded  # the context manager closed it
    with pytest.raises(EdgeVadError, match="no model loaded"):
        backend.infer({"x": x})
    backend.close()  # idempotent


def test_onnxruntime_pool_threads_do_not_spin(matmul_onnx: Path) -> None:
    """Spinning pool threads starve the decoder, clip writer and fine worker of the runtime (see the backend)."""
    with get_backend("onnxruntime").load(matmul_onnx, threads=2) as backend:
        opts = backend._session.get_session_options()
        assert opts.intra_op_num_threads == 2
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnxruntime_quantised_io_is_float_at_the_api(quant_onnx: Path) -> None:
    x = RNG.uniform(-5, 5, size=(2, 4)).astype(np.float32)
    backend = OnnxRuntimeBackend().load(quant_onnx, quant={"x": (SX, ZX), "y": (SY, ZY)})
    assert backend.inputs[0] == TensorSpec("x", (2, 4), "uint8", SX, ZX)
    y = backend.infer({"x": x})["y"]
    assert y.dtype == np.float32
    # reference: the same affine maps in numpy
    xq = dequantize(quantize(x, SX, ZX, "uint8"), SX, ZX)
    ref = dequantize(quantize(xq @ W, SY, ZY, "int8"), SY, ZY)
    assert np.max(np.abs(y - ref)) <= SY + 1e-6  # at most one int8 step (rounding at a tie)
    assert np.mean(np.isclose(y, ref, atol=1e-6)) >= 0.8
    # raw=True: already-quantised in, quantised out
    raw = backend.infer({"x": quantize(x, SX, ZX, "uint8")}, raw=True)["y"]
    assert raw.dtype == np.int8
    np.testing.assert_allclose(dequantize(raw, SY, ZY), y, atol=1e-6)
    with pytest.raises(EdgeVadError, match="expected dtype uint8, found float32"):
        backend.infer({"x": x}, raw=True)
    backend.close()
    # without the quant option the int8 I/O is exposed as is
    with OnnxRuntimeBackend().load(quant_onnx) as plain:
        assert plain.inputs[0].api_dtype() == "uint8"


def test_onnxruntime_option_and_file_errors(matmul_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(EdgeVadError, match=r"unknown option\(s\) \['num_threads'\]"):
        OnnxRuntimeBackend().load(matmul_onnx, num_threads=2)
    with pytest.raises(EdgeVadError, match="providers .*NopeExecutionProvider.* not available"):
        OnnxRuntimeBackend().load(matmul_onnx, providers=["NopeExecutionProvider"])
    with pytest.raises(EdgeVadError, match="model file not found"):
        OnnxRuntimeBackend().load(tmp_path / "missing.onnx")
    with pytest.raises(EdgeVadError, match=r"quant given for \['nope'\]"):
        OnnxRuntimeBackend().load(matmul_onnx, quant={"nope": (0.1, 0)})
    with pytest.raises(EdgeVadError, match="must be int8 or uint8"):
        OnnxRuntimeBackend().load(matmul_onnx, quant={"x": (0.1, 0)})  # a float32 tensor takes no scale
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(EdgeVadError, match="onnxruntime cannot load"):
        OnnxRuntimeBackend().load(junk)


# ---------------------------------------------------------------------------- TFLite / EdgeTPU
@pytest.mark.parametrize("device", [None, "usb", "usb:0", "usb:12", "pci", "pci:1", ":0"])
def test_edgetpu_device_strings_accepted(device: object) -> None:
    assert validate_edgetpu_device(device) == device  # type: ignore[arg-type]


@pytest.mark.parametrize("device", ["", "USB", "usb0", "usb:", "gpu", "pci:x", "usb:0:1", 0])
def test_edgetpu_device_strings_rejected(device: object) -> None:
    with pytest.raises(EdgeVadError, match="'usb', 'usb:0', 'pci', 'pci:0'"):
        validate_edgetpu_device(device)  # type: ignore[arg-type]


@pytest.mark.skipif(edgetpu_library_path() is not None, reason="the Edge TPU runtime is installed here")
def test_edgetpu_without_coral_runtime_is_a_clear_error() -> None:
    called = []
    with pytest.raises(EdgeVadError, match="libedgetpu1-std from Coral's apt repository") as err:
        make_edgetpu_delegate("usb", lambda *a: called.append(a))
    assert not called and err.value.exit_code == 3
    status = backend_status("edgetpu")
    assert not status.available
    with pytest.raises(MissingDependency):
        get_backend("edgetpu")


def test_edgetpu_no_device_found_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_vad.backends.tflite_backend as tfl

    monkeypatch.setattr(tfl, "edgetpu_library_path", lambda: "libedgetpu.so.1")
    seen = []

    def load_delegate(lib: str, options: dict) -> None:
        seen.append((lib, options))
        raise ValueError("Failed to load delegate from libedgetpu.so.1")

    with pytest.raises(EdgeVadError, match="no Edge TPU found at 'usb:0'"):
        make_edgetpu_delegate("usb:0", load_delegate)
    assert seen == [("libedgetpu.so.1", {"device": "usb:0"})]  # pycoral's spelling of the options


def test_edgetpu_refuses_a_model_not_compiled_for_it(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    with pytest.raises(EdgeVadError, match="not compiled for the Edge TPU.*edgetpu_compiler"):
        EdgeTpuBackend().load(plain, device="usb")


def _tiny_tflite(path: Path, quantized: bool) -> Path:
    """y = x + c as a one-op TFLite model, written with LiteRT's own flatbuffer schema."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    const = np.array([[0.5, -1.0, 2.0, 0.0]], np.float32)

    def tensor(name: str, buf: int, scale: float, zp: int) -> "fb.TensorT":
        t = fb.TensorT()
        t.name, t.shape, t.buffer = name.encode(), [1, 4], buf
        t.type = fb.TensorType.INT8 if quantized else fb.TensorType.FLOAT32
        if quantized:
            t.quantization = fb.QuantizationParametersT()
            t.quantization.scale, t.quantization.zeroPoint = [scale], [zp]
        return t

    data = quantize(const, 0.05, 0, "int8") if quantized else const
    buffers = [fb.BufferT(), fb.BufferT(), fb.BufferT(), fb.BufferT()]
    buffers[2].data = np.frombuffer(data.tobytes(), np.uint8).tolist()
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.ADD
    code.version = 2 if quantized else 1
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.AddOptions, fb.AddOptionsT()
    graph = fb.SubGraphT()
    graph.tensors = [tensor("x", 1, 0.05, -10), tensor("c", 2, 0.05, 0), tensor("y", 3, 0.1, 5)]
    graph.inputs, graph.outputs, graph.operators, graph.name = [0], [2], [op], b"main"
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [graph], buffers
    model.description = b"edge-vad test"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


@pytest.mark.parametrize("quantized", [False, True])
def test_tflite_matches_numpy(tmp_path: Path, quantized: bool) -> None:
    if not backend_status("tflite").available:
        pytest.skip("no TFLite interpreter (pip install ai-edge-litert; not in the shared dev venv)")
    model = _tiny_tflite(tmp_path / "add.tflite", quantized)
    x = np.array([[1.0, 0.3, -2.0, 4.0]], np.float32)
    with get_backend("tflite").load(model, num_threads=1) as backend:
        spec = backend.inputs[0]
        assert spec.shape == (1, 4) and spec.dtype == ("int8" if quantized else "float32")
        y = backend.infer({"x": x})["y"]
        assert y.dtype == np.float32
        c = np.array([[0.5, -1.0, 2.0, 0.0]], np.float32)
        if quantized:
            assert (spec.scale, spec.zero_point) == pytest.approx((0.05, -10))
            assert (backend.outputs[0].scale, backend.outputs[0].zero_point) == pytest.approx((0.1, 5))
            ref = dequantize(quantize(dequantize(quantize(x, 0.05, -10), 0.05, -10) + c, 0.1, 5), 0.1, 5)
            assert np.max(np.abs(y - ref)) <= 0.1 + 1e-6  # one output step: TFLite's fixed-point rescale
            assert backend.infer({"x": quantize(x, 0.05, -10)}, raw=True)["y"].dtype == np.int8
        else:
            np.testing.assert_allclose(y, x + c, rtol=1e-6)
        with pytest.raises(EdgeVadError, match=r"'x': expected shape \(1, 4\), found \(2, 4\)"):
            backend.infer({"x": np.zeros((2, 4), np.float32)})


# ----------------------------------------------------------------------- TensorRT engine cache
SHA = "ab" * 32


def test_engine_key_filename_is_stable_safe_and_changes_with_each_component() -> None:
    key = EngineKey(SHA, "fp16", "8.6.2.3", "Orin (nvgpu) sm87")
    assert key.filename == EngineKey(SHA, "fp16", "8.6.2.3", "Orin (nvgpu) sm87").filename
    assert re.fullmatch(r"[A-Za-z0-9._-]+\.engine", key.filename), key.filename
    assert "/" not in EngineKey(SHA, "fp16", "10.3/../x", "a/b\\c:d*e").filename
    variants = [EngineKey("cd" * 32, "fp16", "8.6.2.3", "Orin (nvgpu) sm87"),
                EngineKey(SHA, "int8", "8.6.2.3", "Orin (nvgpu) sm87"),
                EngineKey(SHA, "fp16", "8.6.1", "Orin (nvgpu) sm87"),
                EngineKey(SHA, "fp16", "8.6.2.3", "NVIDIA Tegra X1 sm53"),
                EngineKey(SHA, "fp16", "8.6.2.3", "Orin (nvgpu)_sm87")]  # same slug, still another name
    names = {key.filename} | {v.filename for v in variants}
    assert len(names) == len(variants) + 1
    with pytest.raises(EdgeVadError, match="precision 'fp8'"):
        EngineKey(SHA, "fp8", "8.6", "gpu")
    with pytest.raises(EdgeVadError, match="64 lowercase hex"):
        EngineKey("abc", "fp16", "8.6", "gpu")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGE_VAD_TRT_CACHE", str(tmp_path / "trt"))
    assert default_cache_dir() == tmp_path / "trt"
    monkeypatch.delenv("EDGE_VAD_TRT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "edge-vad" / "trt"


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "engine.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"half")
    assert target.read_bytes() == b"new contents"
    assert sorted(p.name for p in target.parent.iterdir()) == ["engine.bin"]  # no temp file left behind


def test_engine_cache_builds_once_then_reuses_and_rebuilds_on_mismatch(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = EngineKey(SHA, "fp16", "10.3.0", "Orin sm87")
    builds = []

    def build() -> bytes:
        builds.append(1)
        return b"engine-%d" % len(builds)

    assert cache.get_or_build(key, build) == (b"engine-1", True)
    assert cache.get_or_build(key, build) == (b"engine-1", False) and len(builds) == 1
    assert cache.path_for(key).parent == tmp_path and cache.path_for(key).is_file()
    # another key -> another file, built separately
    other = EngineKey(SHA, "fp32", "10.3.0", "Orin sm87")
    assert cache.get_or_build(other, build) == (b"engine-2", True)
    # a sidecar that records another key (a stale or foreign file) -> rebuild
    sidecar = cache.path_for(key).with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace("10.3.0", "8.6.2"))
    assert cache.get_or_build(key, build) == (b"engine-3", True)
    # a torn engine file (bytes differ from the recorded sha256) -> rebuild
    cache.path_for(key).write_bytes(b"engine-3"[:4])
    assert cache.load(key) is None
    assert cache.get_or_build(key, build) == (b"engine-4", True)
    # an engine without its sidecar (crash between the two writes) -> rebuild
    sidecar.unlink()
    assert cache.load(key) is None
    # rebuild=True forces a build even on a hit
    cache.store(key, b"engine-4")
    assert cache.get_or_build(key, build, rebuild=True) == (b"engine-5", True)
    cache.invalidate(key)
    assert not cache.path_for(key).exists() and cache.load(key) is None


# -------------------------------------------------------------------- int8 calibration batches
def test_calibration_batches_drop_the_partial_last_batch(tmp_path: Path) -> None:
    frames = [np.full((3, 4, 4), i, dtype=np.uint8) for i in range(10)]
    batcher = CalibrationBatcher(iter(frames), batch_size=4, frame_shape=(3, 4, 4))
    assert batcher.batch_shape == (4, 3, 4, 4) and batcher.batch_nbytes == 4 * 48 * 4
    batches = list(batcher)
    assert len(batches) == 2 and batcher.batches_done == 2 and batcher.frames_dropped == 2
    for k, batch in enumerate(batches):
        assert batch.shape == (4, 3, 4, 4) and batch.dtype == np.float32 and batch.flags.c_contiguous
        assert [int(batch[i, 0, 0, 0]) for i in range(4)] == [4 * k + i for i in range(4)]
    assert batcher.next_batch() is None  # stays exhausted
    capped = CalibrationBatcher(frames, batch_size=2, frame_shape=(3, 4, 4), max_batches=3)
    assert len(list(capped)) == 3


def test_calibration_errors_name_expected_and_found(tmp_path: Path) -> None:
    bad = CalibrationBatcher([np.zeros((3, 4, 4)), np.zeros((4, 4, 3))], batch_size=2, frame_shape=(3, 4, 4))
    with pytest.raises(EdgeVadError, match=r"frame 1: expected shape \(3, 4, 4\), found \(4, 4, 3\)"):
        bad.next_batch()
    short = CalibrationBatcher([np.zeros((3, 4, 4))] * 3, batch_size=4, frame_shape=(3, 4, 4))
    with pytest.raises(EdgeVadError, match="needs at least 4 frames"):
        short.next_batch()
    with pytest.raises(EdgeVadError, match="batch_size must be >= 1"):
        CalibrationBatcher([], batch_size=0, frame_shape=(3,))


def test_calibration_cache_round_trip(tmp_path: Path) -> None:
    cache_file = tmp_path / "calib" / "backbone.int8.cache"
    batcher = CalibrationBatcher([], batch_size=8, frame_shape=(3, 224, 224), cache_file=cache_file)
    assert batcher.read_cache() is None
    table = b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n"
    batcher.write_cache(table)
    assert cache_file.read_bytes() == table
    again = CalibrationBatcher([], batch_size=8, frame_shape=(3, 224, 224), cache_file=cache_file)
    assert again.read_cache() == table
    assert again.next_batch() is None  # no frames needed when a table exists: no error
    assert CalibrationBatcher([], 1, (1,)).read_cache() is None  # no cache file configured


# ------------------------------------------------------------------------- with a real GPU
@pytest.mark.hardware
def test_cuda_python_buffers_round_trip() -> None:
    if not _has("cuda.bindings") and not _has("cuda.cudart"):
        pytest.skip("cuda-python is not installed")
    from edge_vad.backends.tensorrt_backend import CudaPythonMemory

    try:
        mem = CudaPythonMemory()
    except EdgeVadError as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    host = RNG.normal(size=(3, 224, 224)).astype(np.float32)
    ptr, stream = mem.malloc(host.nbytes), mem.new_stream()
    back = np.empty_like(host)
    mem.htod(ptr, host, stream)
    mem.dtoh(back, ptr, stream)
    mem.sync(stream)
    mem.free(ptr)
    mem.destroy_stream(stream)
    assert np.array_equal(back, host)
    assert re.search(r"\S+ sm\d+$", mem.device_identity()), mem.device_identity()


@pytest.mark.hardware
def test_tensorrt_fp32_engine_matches_numpy_and_is_cached(fixed_onnx: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (it comes with JetPack on a Jetson)")
    fixed = fixed_onnx
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    with TensorRTBackend().load(fixed, precision="fp32", cache_dir=tmp_path / "trt") as backend:
        assert backend.built_now
        np.testing.assert_allclose(backend.infer({"x": x})["y"], x @ W + B, rtol=1e-4, atol=1e-4)
    with TensorRTBackend().load(fixed, precision="fp32", cache_dir=tmp_path / "trt") as cached:
        assert not cached.built_now
        np.testing.assert_allclose(cached.infer({"x": x})["y"], x @ W + B, rtol=1e-4, atol=1e-4)


# ------------------------------------------- TensorRT control flow, against a stub of its API
class _FakeCuda:
    """Host bytes standing in for device memory, behind the CudaMemory interface."""

    name = "fake"

    def __init__(self) -> None:
        self.mem: dict = {}
        self.next = 4096

    def malloc(self, nbytes: int) -> int:
        self.next += 4096
        self.mem[self.next] = bytearray(nbytes)
        return self.next

    def free(self, ptr: int) -> None:
        del self.mem[ptr]

    def new_stream(self) -> object:
        return object()

    def stream_handle(self, stream: object) -> int:
        return id(stream)

    def destroy_stream(self, stream: object) -> None:
        pass

    def htod(self, ptr: int, host: np.ndarray, stream: object) -> None:
        self.mem[ptr][:] = np.ascontiguousarray(host).tobytes()

    def dtoh(self, host: np.ndarray, ptr: int, stream: object) -> None:
        host[...] = np.frombuffer(bytes(self.mem[ptr]), host.dtype).reshape(host.shape)

    def sync(self, stream: object) -> None:
        pass

    def device_identity(self) -> str:
        return "Fake GPU sm87"


def _fake_tensorrt(version: str, cuda: _FakeCuda, log: list) -> object:
    """The slice of TensorRT's Python API the backend calls; the 'engine' computes x @ W + b."""
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dt: dt
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})

    class Network:
        def __init__(self) -> None:
            self.inputs: list = []
            self.num_inputs = 0

        def get_input(self, i: int) -> object:
            return self.inputs[i]

    class Parser:
        num_errors = 0

        def __init__(self, network: Network, logger: object) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            model = onnx.load(path)
            self.network.weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
            for vi in model.graph.input:
                dims = tuple(d.dim_value if d.dim_value else -1 for d in vi.type.tensor_type.shape.dim)
                self.network.inputs.append(types.SimpleNamespace(name=vi.name, shape=dims))
            self.network.num_inputs = len(self.network.inputs)
            return True

    class Config:
        def __init__(self) -> None:
            self.flags: list = []
            self.int8_calibrator = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def set_flag(self, flag: str) -> None:
            self.flags.append(flag)

    class Builder:
        platform_has_fast_fp16 = True
        platform_has_fast_int8 = True

        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            calib = config.int8_calibrator
            if calib is not None:  # TensorRT pulls batches until get_batch returns None
                while (ptrs := calib.get_batch([network.inputs[0].name])) is not None:
                    log.append(("batch", np.frombuffer(bytes(cuda.mem[ptrs[0]]), np.float32).copy()))
                calib.write_calibration_cache(b"calibration table")
            log.append(("build", tuple(config.flags)))
            buf = io.BytesIO()
            np.savez(buf, **network.weights)
            return buf.getvalue()

    class Context:
        def __init__(self, engine: "Engine") -> None:
            self.engine, self.addr = engine, {}

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addr[name] = ptr

        def execute_async_v3(self, stream: int) -> bool:
            x = np.frombuffer(bytes(cuda.mem[self.addr["x"]]), np.float32).reshape(2, 4)
            cuda.mem[self.addr["y"]][:] = (x @ self.engine.w["W"] + self.engine.w["b"]).astype(np.float32).tobytes()
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, data: bytes) -> None:
            self.w = dict(np.load(io.BytesIO(data)))

        def get_tensor_name(self, i: int) -> str:
            return ["x", "y"][i]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name == "x" else "out"

        def get_tensor_shape(self, name: str) -> tuple:
            return (2, 4) if name == "x" else (2, 3)

        def get_tensor_dtype(self, name: str) -> type:
            return np.float32

        def create_execution_context(self) -> Context:
            return Context(self)

    class Runtime:
        def __init__(self, logger: object) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> "Engine | None":
            try:
                return Engine(data)
            except Exception:
                return None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


@pytest.fixture()
def fixed_onnx(matmul_onnx: Path, tmp_path: Path) -> Path:
    """The matmul model with a static batch of 2 (TensorRT builds static shapes)."""
    model = onnx.load(str(matmul_onnx))
    for vi in (model.graph.input[0], model.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_value = 2
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    return path


def test_tensorrt_flow_builds_once_caches_and_runs_against_a_stub(fixed_onnx: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_vad.backends.tensorrt_backend as trt_backend

    cuda, log = _FakeCuda(), []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("10.3.0", cuda, log))
    monkeypatch.setattr(trt_backend, "cuda_memory", lambda: cuda)
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    with TensorRTBackend().load(fixed_onnx, precision="fp16", cache_dir=tmp_path / "trt") as backend:
        assert backend.built_now and log == [("build", ("FP16",))]
        assert "Fake-GPU-sm87" in backend.engine_path.name and "trt10.3.0" in backend.engine_path.name
        assert [s.describe() for s in backend.inputs] == ["x[2,4] float32"]
        np.testing.assert_allclose(backend.infer({"x": x})["y"], x @ W + B, rtol=1e-6)
    assert cuda.mem == {}  # every device buffer freed on close
    with TensorRTBackend().load(fixed_onnx, precision="fp16", cache_dir=tmp_path / "trt") as again:
        assert not again.built_now and len(log) == 1  # the cached engine, no second build
        np.testing.assert_allclose(again.infer({"x": x})["y"], x @ W + B, rtol=1e-6)
    # a cache file TensorRT cannot deserialize is rebuilt once, not loaded
    import hashlib
    import json

    sidecar = again.engine_path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    again.engine_path.write_bytes(b"garbage")
    sidecar.write_text(json.dumps({**meta, "engine_sha256": hashlib.sha256(b"garbage").hexdigest()}))
    with TensorRTBackend().load(fixed_onnx, precision="fp16", cache_dir=tmp_path / "trt") as rebuilt:
        assert rebuilt.built_now and len(log) == 2


def test_tensorrt_int8_flow_calibrates_through_the_batcher(fixed_onnx: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_vad.backends.tensorrt_backend as trt_backend

    cuda, log = _FakeCuda(), []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("8.6.2", cuda, log))
    monkeypatch.setattr(trt_backend, "cuda_memory", lambda: cuda)
    with pytest.raises(EdgeVadError, match="needs calibration frames"):
        TensorRTBackend().load(fixed_onnx, precision="int8", cache_dir=tmp_path)
    wrong = CalibrationBatcher([], batch_size=1, frame_shape=(4,))
    with pytest.raises(EdgeVadError, match=r"batches are \(1, 4\) but input 'x' is \(2, 4\)"):
        TensorRTBackend().load(fixed_onnx, precision="int8", cache_dir=tmp_path, calibration=wrong)
    assert cuda.mem == {}  # failed loads free what they allocated
    frames = [np.full(4, i, np.float32) for i in range(5)]
    calib = CalibrationBatcher(frames, batch_size=2, frame_shape=(4,), cache_file=tmp_path / "calib.cache")
    with TensorRTBackend().load(fixed_onnx, precision="int8", cache_dir=tmp_path, calibration=calib) as backend:
        assert backend.built_now
    batches = [entry[1] for entry in log if entry[0] == "batch"]
    assert [b.tolist() for b in batches] == [[0] * 4 + [1] * 4, [2] * 4 + [3] * 4]  # frame 4 dropped
    assert log[-1] == ("build", ("INT8", "FP16"))
    assert (tmp_path / "calib.cache").read_bytes() == b"calibration table"


def test_tensorrt_11_refuses_reduced_precision(fixed_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_vad.backends.tensorrt_backend as trt_backend

    cuda, log = _FakeCuda(), []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("11.4.0", cuda, log))
    monkeypatch.setattr(trt_backend, "cuda_memory", lambda: cuda)
    with pytest.raises(EdgeVadError, match="TensorRT 11.4.0 cannot build fp16"):
        TensorRTBackend().load(fixed_onnx, precision="fp16", cache_dir=tmp_path)
    with TensorRTBackend().load(fixed_onnx, precision="fp32", cache_dir=tmp_path) as backend:
        assert backend.built_now and log == [("build", ())]
