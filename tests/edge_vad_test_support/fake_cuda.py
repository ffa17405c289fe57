"""Stand-ins for NVIDIA's CUDA driver bindings (cuda-python's `cuda.bindings.driver`, pycuda) that enforce the
driver API's per-thread context rule; the rules and their sources are listed in fake_nvidia.py."""

from __future__ import annotations

import enum
import importlib.machinery
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


