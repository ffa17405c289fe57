"""Inference backends: registry, feed checks, (de)quantisation, onnxruntime end to end, TFLite /
Edge TPU / TensorRT where their libraries exist, and the TensorRT engine cache and int8
calibration batching everywhere (pure numpy)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_vad.backends import (REGISTRY, available_backends, backend_status, best_backend, dequantize, get_backend,
                               quantize)
from edge_vad.backends.base import TensorSpec, check_feeds
from edge_vad.backends.onnxruntime_backend import OnnxRuntimeBackend, default_providers
from edge_vad.backends.tensorrt_backend import TensorRTBackend
from edge_vad.backends.tflite_backend import (EdgeTpuBackend, edgetpu_library_path, make_edgetpu_delegate,
                                              validate_edgetpu_device)
from edge_vad.errors import EdgeVadError, MissingDependency

from edge_vad_test_support.onnx_graphs import (B, RNG, SX, SY, ZX, ZY, W, has_module, matmul_onnx_file,
                                               quant_onnx_file)


@pytest.fixture()
def matmul_onnx(tmp_path: Path) -> Path:
    return matmul_onnx_file(tmp_path / "matmul.onnx")


@pytest.fixture()
def quant_onnx(tmp_path: Path) -> Path:
    return quant_onnx_file(tmp_path / "qdq.onnx")


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


@pytest.mark.skipif(has_module("tensorrt"), reason="tensorrt is installed here")
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
    import edge_vad.backends.edgetpu_runtime as etr

    monkeypatch.setattr(etr, "edgetpu_library_path", lambda: "libedgetpu.so.1")
    seen = []

    def load_delegate(lib: str, options: dict) -> None:
        seen.append((lib, options))
        raise ValueError("Failed to load delegate from libedgetpu.so.1\n")  # the interpreter's words, newline too

    with pytest.raises(EdgeVadError, match="no Edge TPU found at 'usb:0'") as err:
        make_edgetpu_delegate("usb:0", load_delegate)
    assert "\n" not in str(err.value) and err.value.exit_code == 3  # one line
    assert seen == [("libedgetpu.so.1", {"device": "usb:0"})]  # pycoral's spelling of the options


def test_edgetpu_refuses_a_model_not_compiled_for_it(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    with pytest.raises(EdgeVadError, match="not compiled for the Edge TPU.*models compile-edgetpu"):
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


