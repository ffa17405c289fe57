"""CUDA device memory and streams for the TensorRT backend, through the driver API, with the context made
current on the thread that uses it (docs/jetson.md, "Threads and CUDA contexts").

The rule this module is written against (CUDA driver API, "Context Management"): a context is current per
CPU thread; every call that allocates, copies or synchronises acts on the calling thread's current context
and fails with CUDA_ERROR_INVALID_CONTEXT (201) where none is current. The runtime API, which TensorRT uses
internally, makes the device's PRIMARY context current on a thread that has none (CUDA runtime API,
"Interactions with the CUDA Driver API"). So we use the primary context too: `attach()` retains it and
pushes it onto the calling thread's stack, `detach()` pops and releases it; TensorRT on that thread then
sees the same context our buffers live in. `cuda_owner.OwnerThread` attaches one thread per engine and runs
every CUDA and TensorRT call there.

Two bindings, NVIDIA's cuda-python first (`cuda.bindings.driver`, `cuda.cuda` before 12.6), then pycuda
(`Device.retain_primary_context()`, `Context.push()` / `Context.pop()`). Never `pycuda.autoinit`: it creates
a non-primary context and makes it current on the importing thread only.
"""

from __future__ import annotations

import abc
import logging
import threading
from typing import Any, Dict, List, Tuple

import numpy as np

from edge_vad.errors import EdgeVadError, MissingDependency

log = logging.getLogger(__name__)

CUDA_HINT = ("no CUDA binding for TensorRT's buffers: install NVIDIA's cuda-python matching the CUDA of your JetPack "
             "(pip install 'cuda-python==12.*' on JetPack 6) or pycuda (apt: python3-pycuda)")


class CudaError(EdgeVadError):
    """A CUDA call failed; the message names the call and the driver's error."""


class CudaDriver(abc.ABC):
    """One GPU's primary context and the memory, copy and stream calls the TensorRT backend needs.

    `attach` / `detach` are per thread; every other call must come from an attached thread. Pointers and
    stream handles are plain ints, as TensorRT takes them."""

    name = ""

    def __init__(self, device: int = 0) -> None:
        self.device = int(device)
        self._local = threading.local()

    @abc.abstractmethod
    def attach(self) -> None:
        """Retain the primary context and make it current on the calling thread."""

    @abc.abstractmethod
    def detach(self) -> None:
        """Undo `attach` on the calling thread (pop the context, release the retain)."""

    @abc.abstractmethod
    def malloc(self, nbytes: int) -> int: ...

    @abc.abstractmethod
    def free(self, ptr: int) -> None: ...

    @abc.abstractmethod
    def new_stream(self) -> int: ...

    @abc.abstractmethod
    def destroy_stream(self, stream: int) -> None: ...

    @abc.abstractmethod
    def htod(self, ptr: int, host: np.ndarray, stream: int) -> None: ...

    @abc.abstractmethod
    def dtoh(self, host: np.ndarray, ptr: int, stream: int) -> None: ...

    @abc.abstractmethod
    def sync(self, stream: int) -> None: ...

    @abc.abstractmethod
    def device_name(self) -> str: ...

    @abc.abstractmethod
    def compute_capability(self) -> Tuple[int, int]: ...

    def device_identity(self) -> str:
        """e.g. "Orin sm87": the GPU part of the engine cache key."""
        major, minor = self.compute_capability()
        return f"{self.device_name()} sm{major}{minor}"


def _contiguous(host: np.ndarray, what: str) -> np.ndarray:
    if not host.flags.c_contiguous:
        raise EdgeVadError(f"internal: {what} needs a contiguous host array")
    return host


class CudaPythonDriver(CudaDriver):
    """NVIDIA's cuda-python driver bindings: each call returns (CUresult, value...)."""

    name = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        super().__init__(device)
        try:
            from cuda.bindings import driver as cu  # noqa: PLC0415 - cuda-python >= 12.6
        except ImportError:
            from cuda import cuda as cu  # type: ignore[no-redef]  # noqa: PLC0415 - older cuda-python
        self._cu = cu
        self._check(cu.cuInit(0), "cuInit")
        self._dev = self._check(cu.cuDeviceGet(self.device), "cuDeviceGet")

    def _check(self, result: Any, what: str) -> Any:
        err = result[0] if isinstance(result, tuple) else result
        if err != self._cu.CUresult.CUDA_SUCCESS:
            name = self._cu.cuGetErrorName(err)[1]
            name = name.decode() if isinstance(name, (bytes, bytearray)) else str(name)
            raise CudaError(f"CUDA {what} failed: {name} ({int(err)}); check the GPU with tegrastats / nvidia-smi")
        if isinstance(result, tuple) and len(result) > 1:
            return result[1] if len(result) == 2 else result[1:]
        return None

    def attach(self) -> None:
        ctx = self._check(self._cu.cuDevicePrimaryCtxRetain(self._dev), "cuDevicePrimaryCtxRetain")
        self._check(self._cu.cuCtxPushCurrent(ctx), "cuCtxPushCurrent")  # retaining does not make it current
        self._local.ctx = ctx

    def detach(self) -> None:
        if getattr(self._local, "ctx", None) is None:
            return
        self._check(self._cu.cuCtxPopCurrent(), "cuCtxPopCurrent")
        self._check(self._cu.cuDevicePrimaryCtxRelease(self._dev), "cuDevicePrimaryCtxRelease")
        self._local.ctx = None

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self._cu.cuMemAlloc(max(int(nbytes), 1)), "cuMemAlloc"))

    def free(self, ptr: int) -> None:
        self._check(self._cu.cuMemFree(ptr), "cuMemFree")

    def new_stream(self) -> int:
        return int(self._check(self._cu.cuStreamCreate(0), "cuStreamCreate"))

    def destroy_stream(self, stream: int) -> None:
        self._check(self._cu.cuStreamDestroy(stream), "cuStreamDestroy")

    def htod(self, ptr: int, host: np.ndarray, stream: int) -> None:
        host = _contiguous(host, "htod")
        self._check(self._cu.cuMemcpyHtoDAsync(ptr, host.ctypes.data, host.nbytes, stream), "cuMemcpyHtoDAsync")

    def dtoh(self, host: np.ndarray, ptr: int, stream: int) -> None:
        host = _contiguous(host, "dtoh")
        self._check(self._cu.cuMemcpyDtoHAsync(host.ctypes.data, ptr, host.nbytes, stream), "cuMemcpyDtoHAsync")

    def sync(self, stream: int) -> None:
        self._check(self._cu.cuStreamSynchronize(stream), "cuStreamSynchronize")

    def device_name(self) -> str:
        raw = self._check(self._cu.cuDeviceGetName(256, self._dev), "cuDeviceGetName")
        text = raw.decode(errors="replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
        return text.split("\x00")[0].strip()

    def compute_capability(self) -> Tuple[int, int]:
        attr = self._cu.CUdevice_attribute
        major = self._check(self._cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self._dev),
                            "cuDeviceGetAttribute")
        minor = self._check(self._cu.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self._dev),
                            "cuDeviceGetAttribute")
        return int(major), int(minor)


class PyCudaDriver(CudaDriver):
    """pycuda (JetPack's python3-pycuda). pycuda binds a Context object to the thread that made it, so each
    attached thread retains its own handle on the (one) primary context."""

    name = "pycuda"

    def __init__(self, device: int = 0) -> None:
        super().__init__(device)
        import pycuda.driver as drv  # noqa: PLC0415

        drv.init()
        self._drv = drv
        self._device = drv.Device(self.device)
        self._allocations: Dict[int, Any] = {}  # pycuda frees on garbage collection: keep them until free()
        self._streams: Dict[int, Any] = {}

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._drv.Error as exc:
            raise CudaError(f"CUDA {what} failed: {exc}; check the GPU with tegrastats / nvidia-smi") from None

    def attach(self) -> None:
        ctx = self._call("retain_primary_context", self._device.retain_primary_context)
        self._call("Context.push", ctx.push)
        self._local.ctx = ctx

    def detach(self) -> None:
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            return
        self._call("Context.pop", self._drv.Context.pop)
        self._call("Context.detach", ctx.detach)  # releases the primary-context retain
        self._local.ctx = None

    def malloc(self, nbytes: int) -> int:
        alloc = self._call("mem_alloc", self._drv.mem_alloc, max(int(nbytes), 1))
        self._allocations[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocations.pop(ptr, None)
        if alloc is not None:
            self._call("DeviceAllocation.free", alloc.free)

    def new_stream(self) -> int:
        stream = self._call("Stream", self._drv.Stream)
        self._streams[int(stream.handle)] = stream
        return int(stream.handle)

    def destroy_stream(self, stream: int) -> None:
        self._streams.pop(stream, None)  # dropped here, on the attached thread: pycuda destroys it now

    def htod(self, ptr: int, host: np.ndarray, stream: int) -> None:
        self._call("memcpy_htod_async", self._drv.memcpy_htod_async, ptr, _contiguous(host, "htod"),
                   self._streams[stream])

    def dtoh(self, host: np.ndarray, ptr: int, stream: int) -> None:
        self._call("memcpy_dtoh_async", self._drv.memcpy_dtoh_async, _contiguous(host, "dtoh"), ptr,
                   self._streams[stream])

    def sync(self, stream: int) -> None:
        self._call("Stream.synchronize", self._streams[stream].synchronize)

    def device_name(self) -> str:
        return str(self._device.name()).strip()

    def compute_capability(self) -> Tuple[int, int]:
        major, minor = self._device.compute_capability()
        return int(major), int(minor)


def open_driver(device: int = 0) -> CudaDriver:
    """cuda-python if it imports and finds the GPU, else pycuda, else MissingDependency naming both."""
    reasons: List[str] = []
    for impl in (CudaPythonDriver, PyCudaDriver):
        try:
            driver = impl(device)
        except ImportError as exc:
            reasons.append(f"{impl.name}: not installed ({exc})")
            continue
        except Exception as exc:  # no driver library, no device: try the other binding, then say why
            reasons.append(f"{impl.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        log.debug("CUDA through %s", impl.name)
        return driver
    raise MissingDependency(f"{CUDA_HINT} ({'; '.join(reasons)})")
