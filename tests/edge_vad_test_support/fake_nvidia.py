"""Stand-ins for NVIDIA's CUDA driver bindings (cuda-python, pycuda) and TensorRT's Python API that ENFORCE the
vendors' documented rules, so code that breaks them fails here as it would on a Jetson. Computation is done by
onnxruntime on the host; only the rules are NVIDIA's. One `FakeGpu` holds the state all three share.

The rules, and where they are written down:
- Driver API (CUDA Driver API, "Context Management"; cuda-python returns the CUresult first): a context is
  current per CPU thread; allocating, copying, creating or synchronising streams on a thread with no current
  context fails with CUDA_ERROR_INVALID_CONTEXT (201). cuDevicePrimaryCtxRetain does not make the context current
  ("Unlike cuCtxCreate() the newly retained context is not pushed onto the stack"). Memory and streams belong to the
  context they were made in: a stream used under another context is CUDA_ERROR_INVALID_HANDLE (400), a pointer of
  another context or out of its allocation CUDA_ERROR_INVALID_VALUE (1). Nothing works before cuInit (3).
- pycuda (its docs and src/cpp/cuda.hpp): the same driver rule, raised as pycuda.driver.LogicError
  "<call> failed: invalid device context"; `pycuda.autoinit` makes a NEW (non-primary) context current on the
  importing thread only; `retain_primary_context()` returns the primary context without making it current;
  a Context object belongs to the thread that made it ("cannot activate out-of-thread context").
- Runtime API, which TensorRT uses (CUDA Runtime API, "Interactions with the CUDA Driver API"): a thread with no
  current context gets the device's primary context made current implicitly.
- TensorRT: objects work on the context current when they were created; an enqueue under another context fails
  ("Cuda Runtime (invalid resource handle)") and returns False; one IExecutionContext must not be used by two
  threads at once, one builder by one thread at a time (TensorRT "Thread Safety"); a static explicit-batch
  network reads exactly its input's volume from each calibration buffer; the ONNX parser of each release reads
  opsets up to the one onnx-tensorrt's docs/operators.md names (8.0/8.2: 13, 8.4-8.6: 17, 10.0: 20);
  platform_has_fast_int8 is False on Maxwell (sm53, Jetson Nano) and Pascal sm62 (TX2); TF32 is on by default
  for Ampere and later (Orin, sm87).
Every broken rule is also appended to `FakeGpu.violations` (thread name and call), for the tests to show.
"""

from __future__ import annotations

import enum
import importlib.machinery
import io
import json
import struct
import sys
import threading
import types
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

SUCCESS, INVALID_VALUE, NOT_INITIALIZED, INVALID_CONTEXT, INVALID_HANDLE, ILLEGAL_ADDRESS = 0, 1, 3, 201, 400, 700
ERROR_NAMES = {SUCCESS: "CUDA_SUCCESS", INVALID_VALUE: "CUDA_ERROR_INVALID_VALUE",
               NOT_INITIALIZED: "CUDA_ERROR_NOT_INITIALIZED", INVALID_CONTEXT: "CUDA_ERROR_INVALID_CONTEXT",
               INVALID_HANDLE: "CUDA_ERROR_INVALID_HANDLE", ILLEGAL_ADDRESS: "CUDA_ERROR_ILLEGAL_ADDRESS"}
ERROR_STRINGS = {INVALID_VALUE: "invalid argument", NOT_INITIALIZED: "initialization error",
                 INVALID_CONTEXT: "invalid device context", INVALID_HANDLE: "invalid resource handle",
                 ILLEGAL_ADDRESS: "an illegal memory access was encountered"}
# onnx-tensorrt docs/operators.md per release: the highest opset each TensorRT's parser reads
MAX_OPSET = ((10, 0, 20), (8, 4, 17), (8, 0, 13))


class CudaFault(Exception):
    def __init__(self, code: int, call: str):
        super().__init__(f"{call}: {ERROR_NAMES[code]}")
        self.code, self.call = code, call


class Context:
    _ids = iter(range(1, 1 << 30))

    def __init__(self, primary: bool) -> None:
        self.id = next(self._ids)
        self.primary = primary
        self.thread = threading.current_thread()


class FakeGpu:
    """One simulated GPU: contexts, per-thread context stacks, memory and streams tagged with their context."""

    def __init__(self, name: str = "Orin", cc: Tuple[int, int] = (8, 7)) -> None:
        self.name, self.cc = name, cc
        self.initialized = False
        self.primary = Context(primary=True)
        self.retains = 0
        self._tls = threading.local()
        self._lock = threading.Lock()
        self.mem: Dict[int, Tuple[Context, bytearray]] = {}
        self.streams: Dict[int, Context] = {}
        self._next = 0x7F00_0000_0000
        self.violations: List[str] = []
        self.executions: Dict[str, int] = {}  # thread name -> engine executions

    # -- per-thread context stack ---------------------------------------------------------------
    def stack(self) -> List[Context]:
        if not hasattr(self._tls, "stack"):
            self._tls.stack = []
        return self._tls.stack

    def current(self) -> Optional[Context]:
        stack = self.stack()
        return stack[-1] if stack else None

    def fault(self, code: int, call: str) -> CudaFault:
        self.violations.append(f"{threading.current_thread().name}: {call} -> {ERROR_NAMES[code]}")
        return CudaFault(code, call)

    def driver_ctx(self, call: str) -> Context:
        """The driver API's rule: the calling thread's current context, or INVALID_CONTEXT."""
        if not self.initialized:
            raise self.fault(NOT_INITIALIZED, call)
        ctx = self.current()
        if ctx is None:
            raise self.fault(INVALID_CONTEXT, call)
        return ctx

    def runtime_ctx(self, call: str) -> Context:
        """The runtime API's rule: a thread without a current context gets the primary one made current."""
        self.initialized = True
        if self.current() is None:
            self.stack().append(self.primary)
        return self.current()  # type: ignore[return-value]

    # -- memory and streams -----------------------------------------------------------------------
    def alloc(self, ctx: Context, nbytes: int) -> int:
        with self._lock:
            self._next += max(4096, (int(nbytes) + 4095) // 4096 * 4096)
            ptr = self._next
            self.mem[ptr] = (ctx, bytearray(int(nbytes)))
        return ptr

    def region(self, ctx: Context, ptr: int, nbytes: int, call: str, code: int = INVALID_VALUE) -> memoryview:
        entry = self.mem.get(int(ptr))
        if entry is None or entry[0] is not ctx or nbytes > len(entry[1]):
            raise self.fault(code, call)
        return memoryview(entry[1])[:nbytes]

    def free(self, ctx: Context, ptr: int, call: str) -> None:
        self.region(ctx, ptr, 0, call)
        del self.mem[int(ptr)]

    def new_stream(self, ctx: Context) -> int:
        with self._lock:
            self._next += 4096
            handle = self._next
            self.streams[handle] = ctx
        return handle

    def check_stream(self, ctx: Context, handle: Any, call: str) -> None:
        if self.streams.get(int(handle)) is not ctx:
            raise self.fault(INVALID_HANDLE, call)


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec needs one
    mod.__dict__.update(attrs)
    return mod


# ============================================================================ cuda-python (driver API)
def cuda_python_modules(gpu: FakeGpu) -> Dict[str, types.ModuleType]:
    """`cuda`, `cuda.bindings`, `cuda.bindings.driver`: the calls edge_vad makes, with the real parameter names
    (tests/runtime/test_fake_nvidia.py compares them with NVIDIA's package where it is installed)."""

    class CUresult(enum.IntEnum):
        CUDA_SUCCESS = SUCCESS
        CUDA_ERROR_INVALID_VALUE = INVALID_VALUE
        CUDA_ERROR_NOT_INITIALIZED = NOT_INITIALIZED
        CUDA_ERROR_INVALID_CONTEXT = INVALID_CONTEXT
        CUDA_ERROR_INVALID_HANDLE = INVALID_HANDLE
        CUDA_ERROR_ILLEGAL_ADDRESS = ILLEGAL_ADDRESS

    class CUdevice_attribute(enum.IntEnum):  # noqa: N801 - NVIDIA's name
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76

    def guarded(fn: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            try:
                out = fn(*args)
            except CudaFault as exc:
                return (CUresult(exc.code),)
            return (CUresult.CUDA_SUCCESS,) + (out if isinstance(out, tuple) else (() if out is None else (out,)))
        wrapper.__name__ = fn.__name__
        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapper

    @guarded
    def cuInit(Flags):  # noqa: N802,N803 - NVIDIA's names
        gpu.initialized = True

    @guarded
    def cuDeviceGet(ordinal):  # noqa: N802
        if not gpu.initialized:
            raise gpu.fault(NOT_INITIALIZED, "cuDeviceGet")
        if ordinal != 0:
            raise gpu.fault(INVALID_VALUE, "cuDeviceGet")
        return 0

    @guarded
    def cuDevicePrimaryCtxRetain(dev):  # noqa: N802
        if not gpu.initialized:
            raise gpu.fault(NOT_INITIALIZED, "cuDevicePrimaryCtxRetain")
        gpu.retains += 1
        return gpu.primary  # retained, NOT pushed

    @guarded
    def cuDevicePrimaryCtxRelease(dev):  # noqa: N802
        if gpu.retains <= 0:
            raise gpu.fault(INVALID_CONTEXT, "cuDevicePrimaryCtxRelease")
        gpu.retains -= 1

    @guarded
    def cuCtxPushCurrent(ctx):  # noqa: N802
        gpu.stack().append(ctx)

    @guarded
    def cuCtxPopCurrent():  # noqa: N802
        stack = gpu.stack()
        if not stack:
            raise gpu.fault(INVALID_CONTEXT, "cuCtxPopCurrent")
        return stack.pop()

    @guarded
    def cuCtxGetCurrent():  # noqa: N802
        return gpu.current()

    @guarded
    def cuMemAlloc(bytesize):  # noqa: N802
        return gpu.alloc(gpu.driver_ctx("cuMemAlloc"), bytesize)

    @guarded
    def cuMemFree(dptr):  # noqa: N802
        gpu.free(gpu.driver_ctx("cuMemFree"), dptr, "cuMemFree")

    @guarded
    def cuStreamCreate(Flags):  # noqa: N802,N803
        return gpu.new_stream(gpu.driver_ctx("cuStreamCreate"))

    @guarded
    def cuStreamDestroy(hStream):  # noqa: N802,N803
        ctx = gpu.driver_ctx("cuStreamDestroy")
        gpu.check_stream(ctx, hStream, "cuStreamDestroy")
        del gpu.streams[int(hStream)]

    @guarded
    def cuStreamSynchronize(hStream):  # noqa: N802,N803
        gpu.check_stream(gpu.driver_ctx("cuStreamSynchronize"), hStream, "cuStreamSynchronize")

    @guarded
    def cuMemcpyHtoDAsync(dstDevice, srcHost, ByteCount, hStream):  # noqa: N802,N803
        ctx = gpu.driver_ctx("cuMemcpyHtoDAsync")
        gpu.check_stream(ctx, hStream, "cuMemcpyHtoDAsync")
        dst = gpu.region(ctx, dstDevice, ByteCount, "cuMemcpyHtoDAsync")
        dst[:] = (ctypes_bytes(srcHost, ByteCount))

    @guarded
    def cuMemcpyDtoHAsync(dstHost, srcDevice, ByteCount, hStream):  # noqa: N802,N803
        ctx = gpu.driver_ctx("cuMemcpyDtoHAsync")
        gpu.check_stream(ctx, hStream, "cuMemcpyDtoHAsync")
        src = gpu.region(ctx, srcDevice, ByteCount, "cuMemcpyDtoHAsync")
        ctypes_write(dstHost, bytes(src))

    @guarded
    def cuDeviceGetName(length, dev):  # noqa: N802
        return gpu.name.encode()[: length - 1] + b"\x00" * (length - len(gpu.name))

    @guarded
    def cuDeviceGetAttribute(attrib, dev):  # noqa: N802
        return gpu.cc[0] if attrib == CUdevice_attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR else gpu.cc[1]

    def cuGetErrorName(error):  # noqa: N802
        return (CUresult.CUDA_SUCCESS, ERROR_NAMES[int(error)].encode())

    driver = _module("cuda.bindings.driver", CUresult=CUresult, CUdevice_attribute=CUdevice_attribute,
                     **{f.__name__: f for f in (cuInit, cuDeviceGet, cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRelease,
                                                cuCtxPushCurrent, cuCtxPopCurrent, cuCtxGetCurrent, cuMemAlloc, cuMemFree,
                                                cuStreamCreate, cuStreamDestroy, cuStreamSynchronize, cuMemcpyHtoDAsync,
                                                cuMemcpyDtoHAsync, cuDeviceGetName, cuDeviceGetAttribute,
                                                cuGetErrorName)})
    bindings = _module("cuda.bindings", driver=driver, __path__=[])
    cuda = _module("cuda", bindings=bindings, __path__=[])
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.driver": driver}


def ctypes_bytes(address: int, nbytes: int) -> bytes:
    import ctypes

    return ctypes.string_at(int(address), int(nbytes))


def ctypes_write(address: int, data: bytes) -> None:
    import ctypes

    ctypes.memmove(int(address), data, len(data))


# ============================================================================ pycuda
def pycuda_modules(gpu: FakeGpu) -> Dict[str, types.ModuleType]:
    """`pycuda`, `pycuda.driver`, `pycuda.autoinit` (importing the last one runs it, as the real one does)."""

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    def need_ctx(call: str) -> Context:
        try:
            return gpu.driver_ctx(call)
        except CudaFault as exc:
            raise LogicError(f"{call} failed: {ERROR_STRINGS[exc.code]}") from None

    class PyContext:
        def __init__(self, ctx: Context) -> None:
            self.ctx, self.thread, self.valid = ctx, threading.current_thread(), True

        def push(self) -> None:
            gpu.stack().append(self.ctx)

        @staticmethod
        def pop() -> None:
            stack = gpu.stack()
            if not stack:
                raise LogicError("context::pop failed: invalid device context - cannot pop non-current context")
            stack.pop()

        def detach(self) -> None:
            if threading.current_thread() is not self.thread:
                raise LogicError("cannot activate out-of-thread context")
            if self.ctx.primary:
                gpu.retains -= 1
            self.valid = False

        @staticmethod
        def get_device() -> "Device":
            need_ctx("cuCtxGetDevice")
            return Device(0)

    class Device:
        def __init__(self, ordinal: int) -> None:
            if not gpu.initialized:
                raise LogicError("cuDeviceGet failed: initialization error")
            self.ordinal = ordinal

        def name(self) -> str:
            return gpu.name

        def compute_capability(self) -> Tuple[int, int]:
            return gpu.cc

        def retain_primary_context(self) -> PyContext:
            gpu.retains += 1
            return PyContext(gpu.primary)  # "not made current"

        def make_context(self, flags: int = 0) -> PyContext:
            ctx = PyContext(Context(primary=False))
            ctx.push()  # make_context: "Also make the newly-created context the current context."
            return ctx

    class DeviceAllocation:
        def __init__(self, ctx: Context, ptr: int) -> None:
            self.ctx, self.ptr, self.thread = ctx, ptr, threading.current_thread()

        def __int__(self) -> int:
            return self.ptr

        def free(self) -> None:
            if gpu.current() is not self.ctx and threading.current_thread() is not self.thread:
                raise LogicError("cannot activate out-of-thread context")
            gpu.mem.pop(self.ptr, None)

    class Stream:
        def __init__(self, flags: int = 0) -> None:
            self.ctx = need_ctx("cuStreamCreate")
            self.handle = gpu.new_stream(self.ctx)
            self.thread = threading.current_thread()

        def __del__(self) -> None:  # pycuda destroys the stream when the object dies, in its context
            if gpu.current() is not self.ctx and threading.current_thread() is not self.thread:
                gpu.violations.append(f"{threading.current_thread().name}: Stream freed out of thread")
                return
            gpu.streams.pop(self.handle, None)

        def synchronize(self) -> None:
            ctx = need_ctx("cuStreamSynchronize")
            if gpu.streams.get(self.handle) is not ctx:
                raise LogicError("cuStreamSynchronize failed: invalid resource handle")

    def mem_alloc(nbytes: int) -> DeviceAllocation:
        ctx = need_ctx("cuMemAlloc")
        return DeviceAllocation(ctx, gpu.alloc(ctx, nbytes))

    def _region(ctx: Context, ptr: Any, nbytes: int, call: str) -> memoryview:
        try:
            return gpu.region(ctx, int(ptr), nbytes, call)
        except CudaFault as exc:
            raise LogicError(f"{call} failed: {ERROR_STRINGS[exc.code]}") from None

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Optional[Stream] = None) -> None:
        ctx = need_ctx("cuMemcpyHtoDAsync")
        src = np.ascontiguousarray(src)
        _region(ctx, dest, src.nbytes, "cuMemcpyHtoDAsync")[:] = src.tobytes()

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Optional[Stream] = None) -> None:
        ctx = need_ctx("cuMemcpyDtoHAsync")
        data = bytes(_region(ctx, src, dest.nbytes, "cuMemcpyDtoHAsync"))
        dest[...] = np.frombuffer(data, dest.dtype).reshape(dest.shape)

    def init(flags: int = 0) -> None:
        gpu.initialized = True

    driver = _module("pycuda.driver", Error=Error, LogicError=LogicError, Context=PyContext, Device=Device,
                     DeviceAllocation=DeviceAllocation, Stream=Stream, mem_alloc=mem_alloc,
                     memcpy_htod_async=memcpy_htod_async, memcpy_dtoh_async=memcpy_dtoh_async, init=init)

    class AutoInit(types.ModuleType):
        """pycuda.autoinit: cuda.init(); context = make_default_context() (a NEW context, pushed on THIS thread)."""

        def __init__(self) -> None:
            super().__init__("pycuda.autoinit")
            self.__spec__ = importlib.machinery.ModuleSpec("pycuda.autoinit", None)
            init()
            self.context = Device(0).make_context()
            self.device = Device(0)

    class PycudaPackage(types.ModuleType):
        def __getattr__(self, name: str) -> Any:  # `import pycuda.autoinit` runs it once, on first import
            if name == "autoinit":
                mod = AutoInit()
                sys.modules["pycuda.autoinit"] = mod
                return mod
            raise AttributeError(name)

    package = PycudaPackage("pycuda")
    package.__spec__ = importlib.machinery.ModuleSpec("pycuda", None, is_package=True)
    package.__path__ = []  # type: ignore[attr-defined]
    package.driver = driver  # type: ignore[attr-defined]
    return {"pycuda": package, "pycuda.driver": driver}


def install_autoinit_finder(monkeypatch: Any, modules: Dict[str, types.ModuleType]) -> None:
    """`import pycuda.autoinit` goes through the import system, not getattr: a finder that runs it."""

    class Finder:
        @staticmethod
        def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
            if name != "pycuda.autoinit":
                return None
            loader = types.SimpleNamespace(create_module=lambda spec: modules["pycuda"].autoinit,
                                           exec_module=lambda mod: None)
            return importlib.machinery.ModuleSpec(name, loader)

    monkeypatch.setattr(sys, "meta_path", [Finder()] + sys.meta_path)


# ============================================================================ TensorRT
def _max_opset(version: str) -> int:
    parts = tuple(int(p) for p in version.split(".")[:2])
    return next(opset for major, minor, opset in MAX_OPSET if parts >= (major, minor))


def tensorrt_module(gpu: FakeGpu, version: str = "10.3.0", corrupt: float = 0.0) -> types.ModuleType:
    """`tensorrt` at `version`; the engine runs the ONNX on onnxruntime. corrupt > 0 scales every output by
    (1 + corrupt): an engine that computes the wrong thing, for the reference check to catch."""
    import onnx
    import onnxruntime as ort

    trt = _module("tensorrt", __version__=version)
    trt.log = []  # what TensorRT would print through its logger
    trt.builds = []  # (thread, precision flags) per build

    class Logger:
        WARNING, ERROR = 2, 1

        def __init__(self, level: int = 2) -> None:
            self.level = level

    trt.Logger = Logger
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.float32 = "float32"
    trt.nptype = lambda dt: np.dtype(dt).type
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
    ampere = gpu.cc >= (8, 0)

    def error(message: str) -> None:
        trt.log.append(message)
        gpu.violations.append(f"{threading.current_thread().name}: TensorRT: {message}")

    class Network:
        def __init__(self, flags: int) -> None:
            self.explicit = flags != 0 or int(version.split(".")[0]) >= 10
            self.inputs: List[Any] = []
            self.num_inputs = 0
            self.model: Any = None

        def get_input(self, i: int) -> Any:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

        def parse_from_file(self, path: str) -> bool:
            if not self.network.explicit:
                self.errors.append("ONNX models need an explicit-batch network (EXPLICIT_BATCH flag)")
                return False
            model = onnx.load(path)  # external data resolved next to the file, as TensorRT does
            opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
            if opset > _max_opset(version):
                self.errors.append(f"ModelImporter: opset {opset} is newer than this parser supports "
                                   f"(up to {_max_opset(version)})")
                return False
            self.network.model = model
            for vi in model.graph.input:
                dims = tuple(d.dim_value if d.dim_value else -1 for d in vi.type.tensor_type.shape.dim)
                self.network.inputs.append(types.SimpleNamespace(name=vi.name, shape=dims))
            self.network.num_inputs = len(self.network.inputs)
            return True

    class Config:
        def __init__(self) -> None:
            self.flags = {"TF32"} if ampere else set()
            self.int8_calibrator: Any = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            pass

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: str) -> None:
            self.flags.discard(flag)

    class Builder:
        platform_has_fast_fp16 = gpu.cc >= (5, 3) and gpu.cc != (6, 1)
        platform_has_fast_int8 = gpu.cc >= (6, 1) and gpu.cc != (6, 2)

        def __init__(self, logger: Logger) -> None:
            self._busy = threading.Lock()

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def build_serialized_network(self, network: Network, config: Config) -> Optional[bytes]:
            if not self._busy.acquire(blocking=False):
                error("IBuilder used by two threads at once")
                return None
            try:
                ctx = gpu.runtime_ctx("buildSerializedNetwork")
                calib = config.int8_calibrator
                if "INT8" in config.flags:
                    if calib is None:
                        error("INT8 requested without a calibrator")
                        return None
                    inp = network.inputs[0]
                    nbytes = int(np.prod(inp.shape)) * 4  # a static network reads exactly its input per batch
                    while (ptrs := calib.get_batch([inp.name])) is not None:
                        try:
                            gpu.region(ctx, ptrs[0], nbytes, "calibration batch", ILLEGAL_ADDRESS)
                        except CudaFault:
                            error("Cuda Runtime (an illegal memory access was encountered) in calibration")
                            return None
                    calib.write_calibration_cache(b"TRT-calibration-table")
                trt.builds.append((threading.current_thread().name, tuple(sorted(config.flags))))
                precision = "int8" if "INT8" in config.flags else "fp16" if "FP16" in config.flags else "fp32"
                header = json.dumps({"precision": precision, "tf32": "TF32" in config.flags}).encode()
                model = network.model.SerializeToString()
                return struct.pack("<I", len(header)) + header + model
            finally:
                self._busy.release()

    class ExecutionContext:
        def __init__(self, engine: "Engine") -> None:
            self.engine, self.addr = engine, {}
            self._busy = threading.Lock()

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addr[name] = int(ptr)

        def execute_async_v3(self, stream_handle: int) -> bool:
            if not self._busy.acquire(blocking=False):
                error("IExecutionContext used by two threads at once")
                return False
            try:
                ctx = gpu.runtime_ctx("enqueueV3")
                if ctx is not self.engine.ctx or gpu.streams.get(int(stream_handle)) is not ctx:
                    error("Cuda Runtime (invalid resource handle)")
                    return False
                feeds = {}
                for name, shape, dtype in self.engine.inputs:
                    raw = gpu.region(ctx, self.addr[name], int(np.prod(shape)) * 4, "enqueueV3", ILLEGAL_ADDRESS)
                    feeds[name] = np.frombuffer(bytes(raw), np.float32).reshape(shape)
                outputs = self.engine.compute(feeds)
                for name, shape, dtype in self.engine.outputs:
                    value = np.ascontiguousarray(outputs[name], np.float32)
                    gpu.region(ctx, self.addr[name], value.nbytes, "enqueueV3", ILLEGAL_ADDRESS)[:] = value.tobytes()
                gpu.executions[threading.current_thread().name] = \
                    gpu.executions.get(threading.current_thread().name, 0) + 1
                return True
            except CudaFault:
                error("Cuda Runtime (an illegal memory access was encountered)")
                return False
            finally:
                self._busy.release()

    class Engine:
        def __init__(self, data: bytes, ctx: Context) -> None:
            (size,) = struct.unpack("<I", data[:4])
            self.meta = json.loads(data[4:4 + size])
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self.session = ort.InferenceSession(data[4 + size:], opts, providers=["CPUExecutionProvider"])
            self.ctx = ctx
            self.inputs = [(i.name, tuple(i.shape), "float32") for i in self.session.get_inputs()]
            self.outputs = [(o.name, tuple(o.shape), "float32") for o in self.session.get_outputs()]
            self.num_io_tensors = len(self.inputs) + len(self.outputs)

        def compute(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            half = self.meta["precision"] != "fp32"  # reduced precision, roughly: fp16 rounding in and out
            if half:
                feeds = {k: v.astype(np.float16).astype(np.float32) for k, v in feeds.items()}
            names = [o[0] for o in self.outputs]
            out = dict(zip(names, self.session.run(names, feeds)))
            for k, v in out.items():
                v = v.astype(np.float16).astype(np.float32) if half else v
                out[k] = v * np.float32(1.0 + corrupt)
            return out

        def get_tensor_name(self, i: int) -> str:
            return (self.inputs + self.outputs)[i][0]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if name in [i[0] for i in self.inputs] else "out"

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            return next(t[1] for t in self.inputs + self.outputs if t[0] == name)

        def get_tensor_dtype(self, name: str) -> str:
            return "float32"

        def create_execution_context(self) -> ExecutionContext:
            if gpu.runtime_ctx("createExecutionContext") is not self.ctx:
                error("Cuda Runtime (invalid resource handle) creating an execution context")
            return ExecutionContext(self)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Optional[Engine]:
            ctx = gpu.runtime_ctx("deserializeCudaEngine")
            try:
                return Engine(bytes(data), ctx)
            except Exception:  # noqa: BLE001 - TensorRT returns None for a plan it cannot read
                return None

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def serialized_precision(data: bytes) -> Dict[str, Any]:
    """The build settings a fake engine file records (precision, tf32)."""
    (size,) = struct.unpack("<I", data[:4])
    return json.loads(data[4:4 + size])


def install(monkeypatch: Any, gpu: FakeGpu, binding: str = "cuda-python", version: str = "10.3.0",
            corrupt: float = 0.0) -> types.ModuleType:
    """Put the doubles into sys.modules (and hide the other CUDA binding, so the code under test finds only
    `binding`: "cuda-python" or "pycuda"). Returns the tensorrt double."""
    for name in [n for n in sys.modules if n == "cuda" or n.startswith(("cuda.", "pycuda"))]:
        monkeypatch.delitem(sys.modules, name)
    modules = cuda_python_modules(gpu) if binding == "cuda-python" else pycuda_modules(gpu)
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    hidden = ("pycuda",) if binding == "cuda-python" else ("cuda",)

    class Hide:
        @staticmethod
        def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
            if name.split(".")[0] in hidden:
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    monkeypatch.setattr(sys, "meta_path", [Hide()] + sys.meta_path)
    if binding == "pycuda":
        install_autoinit_finder(monkeypatch, modules)
    trt = tensorrt_module(gpu, version, corrupt)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


__all__ = ["FakeGpu", "CudaFault", "cuda_python_modules", "pycuda_modules", "tensorrt_module", "install",
           "serialized_precision", "io"]
