"""TensorRT backend for NVIDIA Jetson (and any CUDA GPU with TensorRT 8.x / 10.x).

The bundle ships ONNX; the engine is built here, on the device, by TensorRT's ONNX parser
(FP32, FP16, or INT8 with entropy calibration), and cached by `trt_engine_cache` under a key
of (onnx sha256, precision, TensorRT version, GPU). A ready `.engine` / `.plan` file loads as is.

Where it comes from: on a Jetson, `tensorrt` comes with JetPack (apt: python3-libnvinfer) and
device buffers use pycuda (apt python3-pycuda or `pip install pycuda`) or NVIDIA's cuda-python.
Nothing here is imported before `load()`: `import tensorrt` happens lazily.

Written for TensorRT 8.x / 10.x as JetPack ships them (TensorRT 11, which JetPack does not carry,
dropped the FP16/INT8 builder flags and calibrators: there only fp32, i.e. the ONNX's own types,
builds). API used: trt.Builder / create_network (EXPLICIT_BATCH flag before TensorRT 10, where it is the
only mode) / trt.OnnxParser / builder config flags / build_serialized_network / trt.Runtime
deserialize_cuda_engine. Tensors by name (num_io_tensors, set_tensor_address,
execute_async_v3; TensorRT >= 8.5), falling back to the bindings API (execute_async_v2) on older
JetPacks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_vad.backends.base import Backend, TensorSpec
from edge_vad.backends.trt_engine_cache import PRECISIONS, EngineCache, EngineKey, atomic_write_bytes, sha256_file
from edge_vad.errors import EdgeVadError, MissingDependency

log = logging.getLogger(__name__)

TENSORRT_HINT = ("tensorrt: not installed — on a Jetson it comes with JetPack (apt: python3-libnvinfer); "
                 "PyPI's tensorrt wheels are not built for Jetson")
CUDA_HINT = ("no CUDA Python binding for TensorRT's buffers: install pycuda (apt: python3-pycuda, or pip install pycuda) "
             "or cuda-python")
DEFAULT_WORKSPACE_MB = 1024  # builder scratch space; fits a 4 GB Jetson Nano beside the runtime


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # noqa: PLC0415 - lazy on purpose: hosts without TensorRT still list backends
    except Exception as exc:  # ImportError, or a broken install raising OSError for libnvinfer
        raise MissingDependency(f"{TENSORRT_HINT} ({type(exc).__name__}: {exc})") from None
    return trt


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


# --------------------------------------------------------------------------------------------
# int8 calibration: the batching is plain numpy (testable anywhere); the TensorRT class is thin.
# --------------------------------------------------------------------------------------------
class CalibrationBatcher:
    """Fixed-size float32 batches of preprocessed frames for TensorRT's int8 entropy calibrator.

    Frames (each of `frame_shape`, the network input without its batch dimension) are read once,
    lazily, so a long iterator never sits in memory. A last partial batch is DROPPED, never
    padded: padding repeats or invents frames, which skews the activation histograms that entropy
    calibration fits. So at least `batch_size` frames are needed, unless `cache_file` already
    holds a calibration table (TensorRT then reads it and asks for no batch).
    """

    def __init__(self, frames: Iterable[np.ndarray], batch_size: int, frame_shape: Sequence[int],
                 cache_file: Optional[Union[str, Path]] = None, max_batches: Optional[int] = None) -> None:
        if int(batch_size) < 1:
            raise EdgeVadError(f"calibration batch_size must be >= 1, found {batch_size}")
        self.batch_size = int(batch_size)
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.max_batches = max_batches
        self._frames: Iterator[np.ndarray] = iter(frames)
        self.batches_done = 0
        self.frames_dropped = 0

    @property
    def batch_shape(self) -> Tuple[int, ...]:
        return (self.batch_size,) + self.frame_shape

    @property
    def batch_nbytes(self) -> int:
        return int(np.prod(self.batch_shape)) * np.dtype(np.float32).itemsize

    def next_batch(self) -> Optional[np.ndarray]:
        """The next (batch_size, *frame_shape) float32 batch, or None when the frames run out."""
        if self.max_batches is not None and self.batches_done >= self.max_batches:
            return None
        batch = np.empty(self.batch_shape, dtype=np.float32)
        for i in range(self.batch_size):
            frame = next(self._frames, None)
            if frame is None:
                self.frames_dropped = i
                if i:
                    log.info("calibration: dropped the last %d frame(s), short of a batch of %d", i, self.batch_size)
                if self.batches_done == 0 and self.read_cache() is None:
                    raise EdgeVadError(f"int8 calibration needs at least {self.batch_size} frames (got {i}); "
                                       "pass more calibration frames")
                return None
            frame = np.asarray(frame)
            if frame.shape != self.frame_shape:
                raise EdgeVadError(f"calibration frame {self.batches_done * self.batch_size + i}: expected shape "
                                   f"{self.frame_shape}, found {frame.shape}")
            batch[i] = frame
        self.batches_done += 1
        return batch

    def __iter__(self) -> Iterator[np.ndarray]:
        while (batch := self.next_batch()) is not None:
            yield batch

    def read_cache(self) -> Optional[bytes]:
        if self.cache_file is not None and self.cache_file.is_file():
            return self.cache_file.read_bytes()
        return None

    def write_cache(self, data: bytes) -> None:
        if self.cache_file is not None:
            atomic_write_bytes(self.cache_file, bytes(data))


def make_entropy_calibrator(batcher: CalibrationBatcher, cuda: "CudaMemory") -> Any:
    """A trt.IInt8EntropyCalibrator2 feeding `batcher`'s batches through one device buffer."""
    trt = import_tensorrt()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # TensorRT requires the explicit base call
            self.error: Optional[BaseException] = None  # exceptions do not cross TensorRT's C++ boundary
            self._stream = cuda.new_stream()
            self._device = cuda.malloc(batcher.batch_nbytes)

        def get_batch_size(self) -> int:
            return batcher.batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            try:
                batch = batcher.next_batch()
                if batch is None:
                    return None
                cuda.htod(self._device, batch, self._stream)
                cuda.sync(self._stream)
                return [int(self._device)]
            except BaseException as exc:  # noqa: BLE001 - re-raised by the builder after the build
                self.error = exc
                return None

        def read_calibration_cache(self) -> Optional[bytes]:
            return batcher.read_cache()

        def write_calibration_cache(self, cache: Any) -> None:
            batcher.write_cache(bytes(cache))

        def free(self) -> None:
            cuda.free(self._device)
            cuda.destroy_stream(self._stream)

    return EntropyCalibrator()


# --------------------------------------------------------------------------------------------
# CUDA buffers: pycuda, else cuda-python. Both give the same small interface.
# --------------------------------------------------------------------------------------------
class CudaMemory:
    """Device allocations, async copies and streams; `ptr`s are plain ints TensorRT accepts."""

    name = ""

    def malloc(self, nbytes: int) -> int: raise NotImplementedError
    def free(self, ptr: int) -> None: raise NotImplementedError
    def new_stream(self) -> Any: raise NotImplementedError
    def stream_handle(self, stream: Any) -> int: raise NotImplementedError
    def destroy_stream(self, stream: Any) -> None: raise NotImplementedError
    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None: raise NotImplementedError
    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None: raise NotImplementedError
    def sync(self, stream: Any) -> None: raise NotImplementedError
    def device_identity(self) -> str: raise NotImplementedError


class PyCudaMemory(CudaMemory):
    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as drv  # noqa: PLC0415
        import pycuda.autoinit as autoinit  # noqa: PLC0415 - creates and pushes a context on device 0

        self._drv, self._device = drv, autoinit.device
        self._allocations: Dict[int, Any] = {}

    def malloc(self, nbytes: int) -> int:
        alloc = self._drv.mem_alloc(max(int(nbytes), 1))
        self._allocations[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocations.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def new_stream(self) -> Any:
        return self._drv.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream: Any) -> None:
        pass  # pycuda frees a Stream when it is garbage-collected

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        self._drv.memcpy_htod_async(ptr, host, stream)

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        self._drv.memcpy_dtoh_async(host, ptr, stream)

    def sync(self, stream: Any) -> None:
        stream.synchronize()

    def device_identity(self) -> str:
        major, minor = self._device.compute_capability()
        return f"{self._device.name()} sm{major}{minor}"


class CudaPythonMemory(CudaMemory):
    """NVIDIA's cuda-python runtime bindings (`cuda.bindings.runtime`, or `cuda.cudart` before 12.6)."""

    name = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        try:
            from cuda.bindings import runtime as cudart  # noqa: PLC0415
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]  # noqa: PLC0415
        self._rt = cudart
        self._dev = device
        self._check(cudart.cudaSetDevice(device), "cudaSetDevice")

    def _check(self, result: Any, what: str) -> Any:
        err = result[0] if isinstance(result, tuple) else result
        if err != self._rt.cudaError_t.cudaSuccess:
            _, name = self._rt.cudaGetErrorName(err)
            raise EdgeVadError(f"CUDA {what} failed: {name.decode() if isinstance(name, bytes) else name}; "
                               "check the GPU with nvidia-smi / tegrastats")
        if isinstance(result, tuple) and len(result) > 1:
            return result[1] if len(result) == 2 else result[1:]
        return None

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self._rt.cudaMalloc(max(int(nbytes), 1)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._check(self._rt.cudaFree(ptr), "cudaFree")

    def new_stream(self) -> Any:
        return self._check(self._rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def destroy_stream(self, stream: Any) -> None:
        self._check(self._rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        host = np.ascontiguousarray(host)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, stream), "cudaMemcpyAsync")

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        if not host.flags.c_contiguous:
            raise EdgeVadError("internal: dtoh needs a contiguous host array")
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, stream), "cudaMemcpyAsync")

    def sync(self, stream: Any) -> None:
        self._check(self._rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def device_identity(self) -> str:
        props = self._check(self._rt.cudaGetDeviceProperties(self._dev), "cudaGetDeviceProperties")
        name = props.name
        name = (name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)).split("\x00")[0]
        return f"{name.strip()} sm{props.major}{props.minor}"


def cuda_memory() -> CudaMemory:
    """pycuda if it imports (and finds a GPU), else cuda-python, else MissingDependency."""
    reasons = []
    for impl in (PyCudaMemory, CudaPythonMemory):
        try:
            return impl()
        except ImportError as exc:
            reasons.append(f"{impl.name}: {exc}")
        except EdgeVadError:
            raise
        except Exception as exc:  # e.g. pycuda's "cuInit failed: no CUDA-capable device"
            reasons.append(f"{impl.name}: {type(exc).__name__}: {exc}")
    raise MissingDependency(f"{CUDA_HINT} ({'; '.join(reasons)})")


# --------------------------------------------------------------------------------------------
# Engine build and the backend
# --------------------------------------------------------------------------------------------
def build_engine(trt: Any, onnx_path: Path, precision: str, cuda: CudaMemory,
                 calibration: Optional[CalibrationBatcher] = None, workspace_mb: int = DEFAULT_WORKSPACE_MB) -> bytes:
    """Parse the ONNX and build a serialized engine at `precision` (fp32 / fp16 / int8)."""
    if trt_major(trt) >= 11 and precision != "fp32":
        # TensorRT 11 removed the FP16/INT8 builder flags and calibrators (strongly typed networks only)
        raise EdgeVadError(f"TensorRT {trt.__version__} cannot build {precision} from a float ONNX (its precision flags are "
                           "gone); use precision='fp32', or export an fp16 / Q/DQ-int8 ONNX offline")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if trt_major(trt) < 10:  # explicit batch is opt-in before TensorRT 10 and the only mode after
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from the file, so external weight files resolve
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeVadError(f"TensorRT cannot parse {onnx_path}: {errors}; re-export the ONNX (opset <= 17, static shapes)")
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for tensor in inputs:
        if any(int(d) < 0 for d in tensor.shape):
            raise EdgeVadError(f"input '{tensor.name}' of {onnx_path} has dynamic shape {tuple(tensor.shape)}; "
                               "export the ONNX with static shapes for TensorRT")

    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    else:
        config.max_workspace_size = int(workspace_mb) << 20
    fast_fp16 = getattr(builder, "platform_has_fast_fp16", True)
    if precision == "fp16":
        if not fast_fp16:
            raise EdgeVadError("this GPU has no fast FP16; use precision='fp32'")
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            raise EdgeVadError("this GPU has no fast INT8 (Jetson Nano's Maxwell GPU has none); use precision='fp16'")
        if calibration is None:
            raise EdgeVadError("precision='int8' needs calibration frames: pass calibration=CalibrationBatcher(...)")
        _check_calibration_shape(calibration, inputs)
        config.set_flag(trt.BuilderFlag.INT8)
        if fast_fp16:  # layers without an int8 kernel then run in fp16 rather than fp32
            config.set_flag(trt.BuilderFlag.FP16)
        calibrator = make_entropy_calibrator(calibration, cuda)
        config.int8_calibrator = calibrator
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if calibrator is not None and calibrator.error is not None:
        raise calibrator.error
    if serialized is None:
        raise EdgeVadError(f"TensorRT failed to build an engine from {onnx_path} at {precision}; see the TensorRT log above")
    return bytes(serialized)


def _check_calibration_shape(calibration: CalibrationBatcher, inputs: Sequence[Any]) -> None:
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
    """A TensorRT engine (built from ONNX on first use and cached, or a given .engine/.plan)."""

    name = "tensorrt"
    options = {
        "precision": "fp32, fp16 (default) or int8 (needs calibration)",
        "cache_dir": "engine cache folder (default $EDGE_VAD_TRT_CACHE or ~/.cache/edge-vad/trt)",
        "calibration": "CalibrationBatcher of preprocessed frames, for int8",
        "workspace_mb": f"builder workspace in MiB (default {DEFAULT_WORKSPACE_MB})",
        # the cache key does not cover the calibration frames: after changing them, pass rebuild=True
        "rebuild": "build the engine even when the cache has one",
    }

    def __init__(self) -> None:
        super().__init__()
        self._cuda: Optional[CudaMemory] = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._ptrs: Dict[str, int] = {}
        self._bindings: List[int] = []
        self.engine_path: Optional[Path] = None
        self.built_now = False

    def _load(self, path: Path, precision: str = "fp16", cache_dir: Optional[Union[str, Path]] = None,
              calibration: Optional[CalibrationBatcher] = None, workspace_mb: int = DEFAULT_WORKSPACE_MB,
              rebuild: bool = False) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        if precision not in PRECISIONS:
            raise EdgeVadError(f"tensorrt: precision {precision!r} is not one of {list(PRECISIONS)}")
        trt = import_tensorrt()
        self._cuda = cuda_memory()
        try:
            return self._open(trt, path, precision, cache_dir, calibration, workspace_mb, rebuild)
        except BaseException:
            self._close()  # free what was allocated before the failure
            raise

    def _open(self, trt: Any, path: Path, precision: str, cache_dir: Optional[Union[str, Path]],
              calibration: Optional[CalibrationBatcher], workspace_mb: int,
              rebuild: bool) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        cuda = self._cuda
        assert cuda is not None
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        suffix = path.suffix.lower()
        if suffix in (".engine", ".plan"):
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            self.engine_path = path
        elif suffix == ".onnx":
            key = EngineKey(sha256_file(path), precision, str(trt.__version__), cuda.device_identity())
            cache = EngineCache(cache_dir)
            def build() -> bytes:
                return build_engine(trt, path, precision, cuda, calibration, workspace_mb)
            data, self.built_now = cache.get_or_build(key, build, rebuild=rebuild)
            engine = runtime.deserialize_cuda_engine(data)
            if engine is None and not self.built_now:  # a cached engine TensorRT refuses: rebuild once
                log.warning("tensorrt: cached engine %s does not deserialize; rebuilding", cache.path_for(key))
                data, self.built_now = cache.get_or_build(key, build, rebuild=True)
                engine = runtime.deserialize_cuda_engine(data)
            self.engine_path = cache.path_for(key)
        else:
            raise EdgeVadError(f"tensorrt loads .onnx (built and cached here) or .engine/.plan files, not {path.name}")
        if engine is None:
            raise EdgeVadError(f"TensorRT cannot deserialize {self.engine_path}; it was built by another TensorRT "
                               "version or GPU: rebuild it from the ONNX")
        self._runtime, self._engine = runtime, engine
        self._context = engine.create_execution_context()
        self._stream = cuda.new_stream()

        inputs, outputs = [], []
        for name, is_input, shape, dtype in _io_tensors(trt, engine):
            if any(d < 0 for d in shape):
                raise EdgeVadError(f"engine tensor '{name}' has dynamic shape {shape}; build it with static shapes")
            ptr = cuda.malloc(int(np.prod(shape)) * np.dtype(dtype).itemsize)
            self._ptrs[name] = ptr
            self._bindings.append(ptr)
            if hasattr(self._context, "set_tensor_address"):
                self._context.set_tensor_address(name, ptr)
            (inputs if is_input else outputs).append(TensorSpec(name, shape, dtype))
        return inputs, outputs

    def _run(self, feeds: Dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        cuda, stream = self._cuda, self._stream
        assert cuda is not None
        for name, arr in feeds.items():
            cuda.htod(self._ptrs[name], arr, stream)
        handle = cuda.stream_handle(stream)
        if hasattr(self._context, "execute_async_v3"):
            ok = self._context.execute_async_v3(handle)
        else:
            ok = self._context.execute_async_v2(bindings=self._bindings, stream_handle=handle)
        if not ok:
            raise EdgeVadError("TensorRT execution failed; see the TensorRT log above")
        results = {}
        for spec in self._outputs:
            host = np.empty(tuple(int(d) for d in spec.shape), dtype=spec.dtype)  # type: ignore[arg-type]
            cuda.dtoh(host, self._ptrs[spec.name], stream)
            results[spec.name] = host
        cuda.sync(stream)
        return results

    def _close(self) -> None:
        if self._cuda is not None:
            for ptr in self._ptrs.values():
                self._cuda.free(ptr)
            if self._stream is not None:
                self._cuda.destroy_stream(self._stream)
        self._ptrs, self._bindings = {}, []
        self._context = self._engine = self._runtime = self._stream = None
