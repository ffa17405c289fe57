"""The TensorRT backend where TensorRT cannot run: its engine cache, int8 calibration batching (pure numpy),
and its control flow against a stub of TensorRT's API; with a real GPU, cuda-python buffers and a real engine."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_vad.backends.tensorrt_backend import CalibrationBatcher, TensorRTBackend
from edge_vad.backends.trt_engine_cache import EngineCache, EngineKey, atomic_write_bytes, default_cache_dir
from edge_vad.errors import EdgeVadError
from edge_vad_test_support.onnx_graphs import B, RNG, W, has_module, matmul_onnx_file, numpy_helper, onnx


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
    if not has_module("cuda.bindings") and not has_module("cuda.cudart"):
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
def fixed_onnx(tmp_path: Path) -> Path:
    """The matmul model with a static batch of 2 (TensorRT builds static shapes)."""
    return matmul_onnx_file(tmp_path / "fixed.onnx", batch=2)


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
