"""The NVIDIA doubles are only worth what their rules are: here they are held to NVIDIA's real package where it
can be had (cuda-python installs without a GPU: names, parameters and error codes are checked against it) and
to the documented behaviour the TensorRT tests lean on."""

from __future__ import annotations

import importlib
import re
import sys
import threading

import numpy as np
import pytest

from edge_vad_test_support import fake_nvidia


def _real_driver():
    try:
        return importlib.import_module("cuda.bindings.driver")
    except ImportError:
        pytest.skip("NVIDIA's cuda-python (cuda-bindings) is not installed; it is in the dev extra")


def _params(doc_first_line: str) -> list:
    inside = doc_first_line[doc_first_line.index("(") + 1:doc_first_line.rindex(")")]
    return [p.split(":")[0].split()[-1] for p in inside.split(",") if p.strip()]


def test_cuda_python_double_has_the_real_names_parameters_and_error_codes() -> None:
    real = _real_driver()
    fake = fake_nvidia.cuda_python_modules(fake_nvidia.FakeGpu())["cuda.bindings.driver"]
    functions = [name for name in dir(fake) if name.startswith("cu") and callable(getattr(fake, name))]
    assert len(functions) >= 15
    for name in functions:
        real_fn = getattr(real, name)  # AttributeError: the double invented a call
        wrapped = getattr(getattr(fake, name), "__wrapped__", getattr(fake, name))
        fake_params = list(wrapped.__code__.co_varnames[:wrapped.__code__.co_argcount])
        assert _params(real_fn.__doc__.splitlines()[0]) == fake_params, name
    for member in fake.CUresult:
        assert int(getattr(real.CUresult, member.name)) == int(member), member.name
    for member in fake.CUdevice_attribute:
        assert int(getattr(real.CUdevice_attribute, member.name)) == int(member), member.name


def test_edge_vad_calls_only_what_the_double_and_the_real_binding_have() -> None:
    """Every cu* call in cuda_driver.py exists in the double (so it is tested) and in NVIDIA's package."""
    from pathlib import Path

    import edge_vad.backends.cuda_driver as cuda_driver

    used = set(re.findall(r"self\._cu\.(cu[A-Za-z]+)\(", Path(cuda_driver.__file__).read_text()))
    fake = fake_nvidia.cuda_python_modules(fake_nvidia.FakeGpu())["cuda.bindings.driver"]
    assert used and used <= set(dir(fake))
    real = _real_driver()
    assert used <= set(dir(real))


def test_pycuda_autoinit_context_is_current_only_on_the_importing_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = fake_nvidia.FakeGpu()
    fake_nvidia.install(monkeypatch, gpu, "pycuda")
    import pycuda.autoinit  # noqa: F401 - what the old backend did
    import pycuda.driver as drv

    assert gpu.current() is not None and not gpu.current().primary  # a NEW context, current here only
    host = np.arange(4, dtype=np.float32)
    ptr = drv.mem_alloc(host.nbytes)
    drv.memcpy_htod_async(int(ptr), host)  # fine on this thread
    errors: list = []

    def pipeline() -> None:
        try:
            drv.memcpy_htod_async(int(ptr), host)
        except drv.LogicError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=pipeline, name="edge-vad-cam")
    t.start()
    t.join()
    assert errors == ["cuMemcpyHtoDAsync failed: invalid device context"]
    assert gpu.violations == ["edge-vad-cam: cuMemcpyHtoDAsync -> CUDA_ERROR_INVALID_CONTEXT"]
    drv.Context.pop()
    assert "pycuda.autoinit" in sys.modules


def test_runtime_api_makes_the_primary_context_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT (runtime API) on a thread without a context gets the PRIMARY one, per thread."""
    gpu = fake_nvidia.FakeGpu()
    fake_nvidia.install(monkeypatch, gpu, "pycuda")
    assert gpu.runtime_ctx("x") is gpu.primary and gpu.current() is gpu.primary
    other = threading.Thread(target=lambda: gpu.runtime_ctx("y"))
    other.start()
    other.join()
    assert gpu.current() is gpu.primary
