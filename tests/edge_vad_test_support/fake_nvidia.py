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

import sys
import types
from typing import Any

from edge_vad_test_support.fake_cuda import (CudaFault, FakeGpu, cuda_python_modules, install_autoinit_finder,
                                             pycuda_modules)
from edge_vad_test_support.fake_tensorrt import serialized_precision, tensorrt_module


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
           "serialized_precision"]
