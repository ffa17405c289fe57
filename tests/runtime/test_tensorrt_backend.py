"""The TensorRT backend where TensorRT cannot run: its engine cache, int8 calibration batching (pure numpy), and
its control flow against the NVIDIA doubles of edge_vad_test_support.fake_nvidia (which enforce CUDA's
per-thread context rule and TensorRT's documented limits); with a real GPU, cuda-python buffers and a real
engine."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_vad.backends.tensorrt_backend import CalibrationBatcher, TensorRTBackend
from edge_vad.backends.trt_engine_cache import EngineCache, EngineKey, atomic_write_bytes, default_cache_dir
from edge_vad.errors import EdgeVadError
from edge_vad_test_support import fake_nvidia
from edge_vad_test_support.onnx_graphs import B, RNG, W, has_module, matmul_onnx_file


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
    from edge_vad.backends.cuda_driver import CudaPythonDriver
    from edge_vad.backends.cuda_owner import OwnerThread

    try:
        mem = CudaPythonDriver()
    except Exception as exc:  # no driver library or no device
        pytest.skip(f"no usable CUDA device: {type(exc).__name__}: {exc}")
    owner = OwnerThread(mem, "cuda-test").start()
    host = RNG.normal(size=(3, 224, 224)).astype(np.float32)

    def round_trip() -> np.ndarray:
        ptr, stream = mem.malloc(host.nbytes), mem.new_stream()
        back = np.empty_like(host)
        mem.htod(ptr, host, stream)
        mem.dtoh(back, ptr, stream)
        mem.sync(stream)
        mem.free(ptr)
        mem.destroy_stream(stream)
        return back

    try:
        assert np.array_equal(owner.call(round_trip), host)
        assert re.search(r"\S+ sm\d+$", mem.device_identity()), mem.device_identity()
    finally:
        owner.stop()


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




# ------------------------------------------- TensorRT control flow, against the NVIDIA doubles
@pytest.fixture()
def fixed_onnx(tmp_path: Path) -> Path:
    """The matmul model with a static batch of 2 (TensorRT builds static shapes); opset 17."""
    return matmul_onnx_file(tmp_path / "fixed.onnx", batch=2)


def _reference(x: np.ndarray, scale: float = 1.0):
    from edge_vad.backends.engine_check import EngineReference

    feeds = [{"x": x[i:i + 2]} for i in range(0, len(x), 2)]
    return EngineReference("fixed.onnx", feeds, [{"y": (f["x"] @ W + B) * scale} for f in feeds])


@pytest.mark.parametrize("binding", ["cuda-python", "pycuda"])
def test_engine_is_built_on_its_owner_thread_and_serves_any_thread(binding: str, fixed_onnx: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = fake_nvidia.FakeGpu()
    trt = fake_nvidia.install(monkeypatch, gpu, binding)
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    backend = TensorRTBackend().load(fixed_onnx, precision="fp16", cache_dir=tmp_path / "trt",
                                     reference=_reference(RNG.normal(size=(6, 4)).astype(np.float32)))
    try:
        assert backend.built_now and [b[0] for b in trt.builds] == ["tensorrt-fixed"]  # built on the owner thread
        assert "Orin-sm87" in backend.engine_path.name and "trt10.3.0" in backend.engine_path.name
        assert [r.metric for r in backend.checks] == ["cosine_min", "max_rel_diff"] and all(r.passed for r in backend.checks)
        results, errors = [], []

        def worker() -> None:  # pipeline threads: no CUDA context of their own
            try:
                for _ in range(5):
                    results.append(backend.infer({"x": x})["y"])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, name=f"pipeline-{i}") for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(results) == 15
        for y in results:  # fp16 double: inputs and outputs rounded to half precision
            np.testing.assert_allclose(y, x @ W + B, rtol=2e-3, atol=2e-3)
        assert set(gpu.executions) == {"tensorrt-fixed"}  # every engine call ran on the owner thread
    finally:
        backend.close()
    assert gpu.violations == [] and trt.log == []
    assert gpu.mem == {} and gpu.streams == {} and gpu.retains == 0  # freed and released on the owner thread


def test_the_doubles_refuse_cuda_calls_from_a_thread_without_a_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the double itself: the rule the threading design exists for."""
    from edge_vad.backends.cuda_driver import CudaError, open_driver

    gpu = fake_nvidia.FakeGpu()
    fake_nvidia.install(monkeypatch, gpu, "cuda-python")
    driver = open_driver()
    with pytest.raises(CudaError, match=r"cuMemAlloc failed: CUDA_ERROR_INVALID_CONTEXT \(201\)"):
        driver.malloc(16)
    driver.attach()
    try:
        ptr = driver.malloc(16)
        out: list = []
        t = threading.Thread(target=lambda: out.append(gpu.region(gpu.current(), ptr, 16, "x")) if gpu.current() else
                             out.append("no context on a new thread"))
        t.start()
        t.join()
        assert out == ["no context on a new thread"]
        driver.free(ptr)
    finally:
        driver.detach()


def test_engine_cache_reuse_and_rebuild_of_a_garbage_file(fixed_onnx: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import json

    gpu = fake_nvidia.FakeGpu()
    trt = fake_nvidia.install(monkeypatch, gpu)
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    with TensorRTBackend().load(fixed_onnx, precision="fp32", cache_dir=tmp_path) as first:
        assert first.built_now
        assert fake_nvidia.serialized_precision(first.engine_path.read_bytes()) == {"precision": "fp32", "tf32": False}
    with TensorRTBackend().load(fixed_onnx, precision="fp32", cache_dir=tmp_path) as again:
        assert not again.built_now and len(trt.builds) == 1
        np.testing.assert_allclose(again.infer({"x": x})["y"], x @ W + B, rtol=1e-6)
    sidecar = again.engine_path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    again.engine_path.write_bytes(b"garbage")
    sidecar.write_text(json.dumps({**meta, "engine_sha256": hashlib.sha256(b"garbage").hexdigest()}))
    with TensorRTBackend().load(fixed_onnx, precision="fp32", cache_dir=tmp_path) as rebuilt:
        assert rebuilt.built_now and len(trt.builds) == 2
    assert gpu.violations == []


def test_a_wrong_engine_is_refused_in_one_line_and_never_cached(fixed_onnx: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from edge_vad.backends.engine_check import EngineMismatch

    gpu = fake_nvidia.FakeGpu()
    fake_nvidia.install(monkeypatch, gpu, corrupt=0.2)  # every output 20 % too large
    ref = _reference(RNG.normal(size=(6, 4)).astype(np.float32))
    with pytest.raises(EngineMismatch, match=r"fp16 engine built from fixed.onnx does not match .*\(y max_rel_diff "
                                             r".* not cached") as err:
        TensorRTBackend().load(fixed_onnx, precision="fp16", cache_dir=tmp_path / "trt", reference=ref)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "trt").exists() or not any((tmp_path / "trt").iterdir())
    assert gpu.mem == {} and gpu.retains == 0  # the failed load freed its buffers


def test_int8_calibrates_with_input_shaped_batches_and_is_refused_on_a_nano(fixed_onnx: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = fake_nvidia.FakeGpu()
    trt = fake_nvidia.install(monkeypatch, gpu, version="8.6.2")
    with pytest.raises(EdgeVadError, match="needs calibration frames"):
        TensorRTBackend().load(fixed_onnx, precision="int8", cache_dir=tmp_path)
    wrong = CalibrationBatcher([], batch_size=8, frame_shape=(4,))
    with pytest.raises(EdgeVadError, match=r"batches are \(8, 4\) but input 'x' is \(2, 4\)"):
        TensorRTBackend().load(fixed_onnx, precision="int8", cache_dir=tmp_path, calibration=wrong)
    assert gpu.mem == {}  # failed loads free what they allocated
    frames = [np.full(4, i, np.float32) for i in range(5)]
    calib = CalibrationBatcher(frames, batch_size=2, frame_shape=(4,), cache_file=tmp_path / "calib.cache")
    with TensorRTBackend().load(fixed_onnx, precision="int8", cache_dir=tmp_path, calibration=calib) as backend:
        assert backend.built_now
    assert calib.batches_done == 2 and calib.frames_dropped == 1
    assert trt.builds[-1] == ("tensorrt-fixed", ("FP16", "INT8", "TF32"))
    assert (tmp_path / "calib.cache").read_bytes() == b"TRT-calibration-table"
    assert gpu.violations == []

    import onnx

    model = onnx.load(str(fixed_onnx))  # MatMul and Add read the same at opset 13, which JetPack 4.6 parses
    model.opset_import[0].version = 13
    onnx.save(model, str(tmp_path / "fixed13.onnx"))
    nano = fake_nvidia.FakeGpu("NVIDIA Tegra X1", (5, 3))
    fake_nvidia.install(monkeypatch, nano, version="8.2.1")
    calib = CalibrationBatcher(frames, batch_size=2, frame_shape=(4,))
    with pytest.raises(EdgeVadError, match=r"this GPU \(NVIDIA Tegra X1 sm53\) has no fast int8 .* --precision fp16"):
        TensorRTBackend().load(tmp_path / "fixed13.onnx", precision="int8", cache_dir=tmp_path, calibration=calib)
    with TensorRTBackend().load(tmp_path / "fixed13.onnx", precision="fp16", cache_dir=tmp_path) as on_nano:
        assert on_nano.built_now and "NVIDIA-Tegra-X1-sm53" in on_nano.engine_path.name
    assert nano.violations == []


def test_versions_tensorrt_refuses(fixed_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = fake_nvidia.FakeGpu()
    fake_nvidia.install(monkeypatch, gpu, version="11.4.0")
    with pytest.raises(EdgeVadError, match="TensorRT 11.4.0 cannot build fp16"):
        TensorRTBackend().load(fixed_onnx, precision="fp16", cache_dir=tmp_path)
    with TensorRTBackend().load(fixed_onnx, precision="fp32", cache_dir=tmp_path) as backend:
        assert backend.built_now
    fake_nvidia.install(monkeypatch, fake_nvidia.FakeGpu(), version="8.2.1")  # JetPack 4.6.x: parses opset <= 13
    with pytest.raises(EdgeVadError, match=r"TensorRT 8.2.1 cannot parse fixed.onnx: .*opset 17"):
        TensorRTBackend().load(fixed_onnx, precision="fp16", cache_dir=tmp_path)
    with pytest.raises(EdgeVadError, match=r"TensorRT 8.2.1 cannot parse fixed.onnx: the bundle needs TensorRT >= 8.4"):
        TensorRTBackend().load(fixed_onnx, precision="fp16", cache_dir=tmp_path, min_version="8.4")
