"""TensorRT backend for NVIDIA Jetson (and any CUDA GPU with TensorRT 8.x / 10.x). docs/jetson.md is the long form.

The bundle ships ONNX; the engine is built here, on the device, by TensorRT's ONNX parser (fp32, fp16, or
int8 with entropy calibration), checked against the bundle's reference outputs, and only then cached by
`trt_engine_cache` under (onnx sha256, precision, TensorRT version, GPU). A ready `.engine` / `.plan` file
loads as is.

Threads: every CUDA and TensorRT call of one engine runs on its own owner thread (`cuda_owner`), which has
the GPU's primary context current; `infer` may be called from any thread (the service runs one pipeline
thread per camera) and waits for the owner. Nothing here touches CUDA on the caller's thread.

Where it comes from: on a Jetson, `tensorrt` comes with JetPack (apt: python3-libnvinfer); device buffers use
NVIDIA's cuda-python or pycuda (`cuda_driver`). Nothing is imported before `load()`.

Written for TensorRT 8.x / 10.x as JetPack ships them (TensorRT 11, which JetPack does not carry, dropped the
fp16/int8 builder flags and calibrators: there only fp32, the ONNX's own types, builds). API used:
trt.Builder / create_network (EXPLICIT_BATCH flag before TensorRT 10, where it is the only mode) /
trt.OnnxParser / builder config flags / build_serialized_network / trt.Runtime deserialize_cuda_engine;
tensors by name (num_io_tensors, set_tensor_address, execute_async_v3; TensorRT >= 8.5), else the bindings
API (execute_async_v2) of older JetPacks.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from edge_vad.backends.base import Backend, TensorSpec
from edge_vad.backends.cuda_driver import CudaDriver, open_driver
from edge_vad.backends.cuda_owner import OwnerThread
from edge_vad.backends.engine_check import EngineReference
from edge_vad.backends.trt_calibration import CalibrationBatcher, make_entropy_calibrator
from edge_vad.backends.trt_engine_cache import PRECISIONS, EngineCache, EngineKey, sha256_file
from edge_vad.errors import EdgeVadError, MissingDependency

log = logging.getLogger(__name__)

TENSORRT_HINT = ("tensorrt: not installed — on a Jetson it comes with JetPack (apt: python3-libnvinfer); "
                 "PyPI's tensorrt wheels are not built for Jetson")
DEFAULT_WORKSPACE_MB = 1024  # builder scratch space; fits a 4 GB Jetson Nano beside the runtime


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # noqa: PLC0415 - lazy on purpose: hosts without TensorRT still list backends
    except Exception as exc:  # ImportError, or a broken install raising OSError for libnvinfer
        raise MissingDependency(f"{TENSORRT_HINT} ({type(exc).__name__}: {exc})") from None
    return trt


def version_tuple(text: str) -> Tuple[int, ...]:
    """"8.5.2.2" -> (8, 5, 2, 2); the leading numbers only."""
    return tuple(int(p) for p in re.findall(r"\d+", str(text).split("+")[0])[:4])


def trt_major(trt: Any) -> int:
    return version_tuple(trt.__version__)[0]


def require_version(trt: Any, minimum: Optional[str], what: str) -> None:
    """The bundle records the oldest TensorRT whose ONNX parser reads its graphs (docs/jetson.md, "Opset")."""
    if minimum and version_tuple(trt.__version__) < version_tuple(minimum):
        raise EdgeVadError(f"TensorRT {trt.__version__} cannot parse {what}: the bundle needs TensorRT >= {minimum} "
                           "(its ONNX opset); upgrade JetPack or use --backend onnxruntime")


def build_engine(trt: Any, onnx_path: Path, precision: str, cuda: CudaDriver,
                 calibration: Optional[CalibrationBatcher] = None, workspace_mb: int = DEFAULT_WORKSPACE_MB) -> bytes:
    """Parse the ONNX and build a serialized engine at `precision` (fp32 / fp16 / int8). Runs on the owner thread."""
    if trt_major(trt) >= 11 and precision != "fp32":
        # TensorRT 11 removed the FP16/INT8 builder flags and calibrators (strongly typed networks only)
        raise EdgeVadError(f"TensorRT {trt.__version__} cannot build {precision} from a float ONNX (its precision flags are "
                           "gone); use --precision fp32, or export an fp16 / Q/DQ-int8 ONNX offline")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if trt_major(trt) < 10:  # explicit batch is opt-in before TensorRT 10 and the only mode after
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file, so external weight files resolve
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeVadError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {errors}; re-export the bundle")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for tensor in inputs:
        if any(int(d) < 0 for d in tensor.shape):
            raise EdgeVadError(f"input '{tensor.name}' of {onnx_path.name} has dynamic shape {tuple(tensor.shape)}; "
                               "export the ONNX with static shapes for TensorRT")

    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    else:
        config.max_workspace_size = int(workspace_mb) << 20
    gpu = cuda.device_identity()
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # TensorRT allows TF32 (10-bit mantissa) for fp32 layers by default on Ampere (Orin); fp32 means fp32 here
        config.clear_flag(trt.BuilderFlag.TF32)
    fast_fp16 = getattr(builder, "platform_has_fast_fp16", True)
    if precision == "fp16":
        if not fast_fp16:
            raise EdgeVadError(f"this GPU ({gpu}) has no fast fp16; use --precision fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            raise EdgeVadError(f"this GPU ({gpu}) has no fast int8 (Jetson Nano's Maxwell GPU has none); "
                               "use --precision fp16")
        if calibration is None:
            raise EdgeVadError("precision int8 needs calibration frames: re-export the bundle with --calib DIR")
        _check_calibration_shape(calibration, inputs)
        config.set_flag(trt.BuilderFlag.INT8)
        if fast_fp16:  # layers without an int8 kernel then run in fp16 rather than fp32
            config.set_flag(trt.BuilderFlag.FP16)
        calibrator = make_entropy_calibrator(trt, calibration, cuda)
        config.int8_calibrator = calibrator
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if calibrator is not None and calibrator.error is not None:
        raise calibrator.error
    if serialized is None:
        raise EdgeVadError(f"TensorRT failed to build an engine from {onnx_path.name} at {precision}; see the TensorRT "
                           "log above")
    return bytes(serialized)


def _check_calibration_shape(calibration: CalibrationBatcher, inputs: List[Any]) -> None:
    if len(inputs) != 1:
        raise EdgeVadError(f"int8 calibration supports single-input models; this one has {[t.name for t in inputs]}")
    shape = tuple(int(d) for d in inputs[0].shape)
    if calibration.batch_shape != shape:
        raise EdgeVadError(f"calibration batches are {calibration.batch_shape} but input '{inputs[0].name}' is {shape}; "
                           "set batch_size and frame_shape to match the network")


def _io_tensors(trt: Any, engine: Any) -> List[Tuple[str, bool, Tuple[int, ...], str]]:
    """(name, is_input, shape, numpy dtype) for each I/O tensor, in binding order."""
    out = []
    if hasattr(engine, "num_io_tensors"):  # TensorRT >= 8.5
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            out.append((name, is_input, tuple(engine.get_tensor_shape(name)), engine.get_tensor_dtype(name)))
    else:
        for i in range(engine.num_bindings):
            out.append((engine.get_binding_name(i), engine.binding_is_input(i),
                        tuple(engine.get_binding_shape(i)), engine.get_binding_dtype(i)))
    return [(n, inp, tuple(int(d) for d in shape), np.dtype(trt.nptype(dt)).name) for n, inp, shape, dt in out]


class TensorRTBackend(Backend):
    """A TensorRT engine (built from ONNX on first use, checked and cached, or a given .engine/.plan)."""

    name = "tensorrt"
    options = {
        "precision": "fp32, fp16 (default) or int8 (needs calibration)",
        "cache_dir": "engine cache folder (default $EDGE_VAD_TRT_CACHE or ~/.cache/edge-vad/trt)",
        "calibration": "CalibrationBatcher of preprocessed frames, for int8",
        "reference": "EngineReference: a newly built engine must reproduce these outputs before it is cached",
        "min_version": "the oldest TensorRT whose ONNX parser reads the graph (from the bundle)",
        "workspace_mb": f"builder workspace in MiB (default {DEFAULT_WORKSPACE_MB})",
        # the cache key does not cover the calibration frames: after changing them, pass rebuild=True
        "rebuild": "build the engine even when the cache has one",
    }

    def __init__(self) -> None:
        super().__init__()
        self._owner: Optional[OwnerThread] = None
        self._cuda: Optional[CudaDriver] = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Optional[int] = None
        self._ptrs: Dict[str, int] = {}
        self._bindings: List[int] = []
        self._io: List[TensorSpec] = []
        self.engine_path: Optional[Path] = None
        self.built_now = False
        self.build_seconds: Optional[float] = None
        self.precision: Optional[str] = None
        self.checks: List[Any] = []  # the reference check's MetricResults of an engine built now

    def _load(self, path: Path, precision: str = "fp16", cache_dir: Optional[Union[str, Path]] = None,
              calibration: Optional[CalibrationBatcher] = None, reference: Optional[EngineReference] = None,
              min_version: Optional[str] = None, workspace_mb: int = DEFAULT_WORKSPACE_MB,
              rebuild: bool = False) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        if precision not in PRECISIONS:
            raise EdgeVadError(f"tensorrt: precision {precision!r} is not one of {list(PRECISIONS)}")
        trt = import_tensorrt()
        require_version(trt, min_version, path.name)
        self._cuda = open_driver()
        self._owner = OwnerThread(self._cuda, name=f"tensorrt-{path.stem}").start()
        self.precision = precision
        try:
            return self._owner.call(self._open, trt, path, precision, cache_dir, calibration, reference,
                                    workspace_mb, rebuild)
        except BaseException:
            self._close()  # free what was allocated before the failure, on the owner thread
            raise

    # -- on the owner thread ------------------------------------------------------------------
    def _open(self, trt: Any, path: Path, precision: str, cache_dir: Optional[Union[str, Path]],
              calibration: Optional[CalibrationBatcher], reference: Optional[EngineReference], workspace_mb: int,
              rebuild: bool) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        cuda = self._cuda
        assert cuda is not None
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        suffix = path.suffix.lower()
        if suffix in (".engine", ".plan"):
            self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            self.engine_path = path
            if self._engine is None:
                raise EdgeVadError(f"TensorRT cannot deserialize {path}; it was built by another TensorRT version or GPU: "
                                   "rebuild it from the ONNX")
            return self._bind(trt)
        if suffix != ".onnx":
            raise EdgeVadError(f"tensorrt loads .onnx (built and cached here) or .engine/.plan files, not {path.name}")
        key = EngineKey(sha256_file(path), precision, str(trt.__version__), cuda.device_identity())
        cache = EngineCache(cache_dir)
        self.engine_path = cache.path_for(key)
        data = None if rebuild else cache.load(key)
        if data is not None:
            self._engine = self._runtime.deserialize_cuda_engine(data)
            if self._engine is None:
                log.warning("tensorrt: cached engine %s does not deserialize; rebuilding", self.engine_path)
            else:
                log.info("tensorrt: using cached engine %s", self.engine_path)
        if self._engine is None:
            log.info("tensorrt: building the %s engine for %s (minutes on a Jetson)", precision, path.name)
            start = time.monotonic()
            data = build_engine(trt, path, precision, cuda, calibration, workspace_mb)
            self.build_seconds = time.monotonic() - start
            self._engine = self._runtime.deserialize_cuda_engine(data)
            if self._engine is None:
                raise EdgeVadError(f"TensorRT built an engine from {path.name} that it cannot deserialize; "
                                   "see the TensorRT log above")
            self.built_now = True
        inputs, outputs = self._bind(trt)
        if self.built_now:
            if reference is not None:  # EngineMismatch (one line) leaves nothing in the cache
                self.checks = reference.check(self._execute, precision)
                log.info("tensorrt: %s %s engine matches the reference (%s)", path.name, precision,
                         "; ".join(r.describe() for r in self.checks))
            else:
                log.warning("tensorrt: %s has no reference outputs in the bundle; the engine is cached unchecked",
                            path.name)
            assert data is not None
            cache.store(key, data)
            log.info("tensorrt: built %s in %.0f s, cached at %s", path.name, self.build_seconds or 0.0, self.engine_path)
        return inputs, outputs

    def _bind(self, trt: Any) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        cuda = self._cuda
        assert cuda is not None
        self._context = self._engine.create_execution_context()
        self._stream = cuda.new_stream()
        inputs, outputs = [], []
        for name, is_input, shape, dtype in _io_tensors(trt, self._engine):
            if any(d < 0 for d in shape):
                raise EdgeVadError(f"engine tensor '{name}' has dynamic shape {shape}; build it with static shapes")
            ptr = cuda.malloc(int(np.prod(shape)) * np.dtype(dtype).itemsize)
            self._ptrs[name] = ptr
            self._bindings.append(ptr)
            if hasattr(self._context, "set_tensor_address"):
                self._context.set_tensor_address(name, ptr)
            (inputs if is_input else outputs).append(TensorSpec(name, shape, dtype))
        self._io = outputs
        return inputs, outputs

    def _execute(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        cuda, stream = self._cuda, self._stream
        assert cuda is not None and stream is not None
        for name, arr in feeds.items():
            cuda.htod(self._ptrs[name], np.ascontiguousarray(arr), stream)
        if hasattr(self._context, "execute_async_v3"):
            ok = self._context.execute_async_v3(stream)
        else:
            ok = self._context.execute_async_v2(bindings=self._bindings, stream_handle=stream)
        if not ok:
            raise EdgeVadError("TensorRT execution failed; see the TensorRT log above")
        results = {}
        for spec in self._io:
            host = np.empty(tuple(int(d) for d in spec.shape), dtype=spec.dtype)  # type: ignore[arg-type]
            cuda.dtoh(host, self._ptrs[spec.name], stream)
            results[spec.name] = host
        cuda.sync(stream)
        return results

    def _free(self) -> None:
        if self._cuda is not None:
            for ptr in self._ptrs.values():
                self._cuda.free(ptr)
            if self._stream is not None:
                self._cuda.destroy_stream(self._stream)
        self._ptrs, self._bindings = {}, []
        self._context = self._engine = self._runtime = self._stream = None  # TensorRT objects die on this thread

    # -- from any thread ------------------------------------------------------------------------
    def _run(self, feeds: Dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        assert self._owner is not None
        return self._owner.call(self._execute, feeds)

    def _close(self) -> None:
        owner, self._owner = self._owner, None
        if owner is None:
            return
        try:
            if owner.alive:
                owner.call(self._free)
        finally:
            owner.stop()
