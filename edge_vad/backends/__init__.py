"""Registry of inference backends (DESIGN.md convention 1).

Each backend is a module + class, registered by name with the import names it needs. Listing
checks those with `importlib.util.find_spec` (nothing heavy is imported), plus the Edge TPU
delegate library for `edgetpu`. A missing library makes a backend unavailable, with what to
install; asking for it anyway raises MissingDependency (exit code 3). Nothing is ever installed
at run time.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from edge_vad.backends.base import Backend, TensorSpec, check_feeds, dequantize, quantize
from edge_vad.errors import EdgeVadError, MissingDependency

__all__ = [
    "REGISTRY", "Backend", "BackendInfo", "BackendStatus", "TensorSpec", "available_backends", "backend_status",
    "best_backend", "check_feeds", "dequantize", "get_backend", "quantize",
]


@dataclass(frozen=True)
class BackendInfo:
    """Where a backend lives and what it needs.

    `requires` is a tuple of groups; each group lists import names of which ANY one will do
    (e.g. ai_edge_litert or tflite_runtime), and every group must be satisfied.
    """

    module: str
    class_name: str
    requires: Tuple[Tuple[str, ...], ...]
    install_hint: str
    description: str


_TFLITE = ("ai_edge_litert", "tflite_runtime")
_TFLITE_HINT = "pip install ai-edge-litert (pip install 'edge-vad[coral]'); tflite-runtime works only with numpy<2"
_CUDA = ("cuda.bindings", "cuda.cuda", "pycuda")  # driver API: NVIDIA's cuda-python first (cuda_driver.py)

REGISTRY: Dict[str, BackendInfo] = {
    "onnxruntime": BackendInfo(
        "edge_vad.backends.onnxruntime_backend", "OnnxRuntimeBackend", (("onnxruntime",),),
        "pip install onnxruntime (onnxruntime-gpu for CUDA; on a Jetson, NVIDIA's onnxruntime-gpu wheel for JetPack)",
        "ONNX Runtime: TensorRT / CUDA / CPU execution providers"),
    "tensorrt": BackendInfo(
        "edge_vad.backends.tensorrt_backend", "TensorRTBackend", (("tensorrt",), _CUDA),
        "on a Jetson tensorrt comes with JetPack (apt: python3-libnvinfer); CUDA buffers need NVIDIA's cuda-python "
        "(pip install 'cuda-python==<JetPack's CUDA major>.*') or pycuda (apt: python3-pycuda); PyPI's tensorrt "
        "wheels are not built for Jetson (docs/jetson.md)",
        "TensorRT engine built on the device from the bundle's ONNX, cached"),
    "tflite": BackendInfo(
        "edge_vad.backends.tflite_backend", "TFLiteBackend", (_TFLITE,), _TFLITE_HINT,
        "TFLite interpreter on the CPU (XNNPACK)"),
    "edgetpu": BackendInfo(
        "edge_vad.backends.tflite_backend", "EdgeTpuBackend", (_TFLITE,),
        _TFLITE_HINT + "; plus libedgetpu1-std from Coral's apt repository (not PyPI: PyPI's 'pycoral' is unrelated)",
        "TFLite with the Coral Edge TPU delegate (model compiled by edgetpu_compiler)"),
}


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here. `reason` says why not (empty when available); `detail`
    names what was found, or what to install."""

    name: str
    available: bool
    reason: str
    detail: str


def _find(import_name: str) -> bool:
    try:
        return importlib.util.find_spec(import_name) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing or broken
        return False


@functools.lru_cache(maxsize=1)
def _distributions() -> Dict[str, List[str]]:
    """import name -> distribution names (Python >= 3.10; empty before, then the import name is tried)."""
    return dict(getattr(importlib.metadata, "packages_distributions", dict)())


def _version(import_name: str) -> str:
    top = import_name.split(".")[0]
    dists = _distributions().get(top, [top])
    for dist in dists:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return import_name  # apt-installed modules (JetPack's tensorrt) may carry no pip metadata


def _numpy_major() -> int:
    import numpy as np

    return int(np.__version__.split(".")[0])


def backend_status(name: str) -> BackendStatus:
    """Availability of one registered backend, without importing heavy libraries."""
    info = _info(name)
    found: List[str] = []
    for group in info.requires:
        hit = next((mod for mod in group if _find(mod)), None)
        if hit is None:
            return BackendStatus(name, False, f"{' or '.join(group)} not installed", info.install_hint)
        if hit == "tflite_runtime" and _numpy_major() >= 2:
            return BackendStatus(name, False, "tflite_runtime needs numpy<2 (numpy 2 is installed)", info.install_hint)
        found.append(_version(hit))
    if name == "edgetpu":
        from edge_vad.backends.edgetpu_runtime import CORAL_RUNTIME_HINT, EDGETPU_LIBRARY, edgetpu_library_path

        lib = edgetpu_library_path()
        if lib is None:
            return BackendStatus(name, False, f"{EDGETPU_LIBRARY} not found", CORAL_RUNTIME_HINT.format(lib=EDGETPU_LIBRARY))
        found.append(lib)
    return BackendStatus(name, True, "", ", ".join(found))


def available_backends() -> List[BackendStatus]:
    """Every registered backend, in registry order, with why the unavailable ones are."""
    return [backend_status(name) for name in REGISTRY]


def _info(name: str) -> BackendInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise EdgeVadError(f"unknown backend {name!r}; choose one of {sorted(REGISTRY)}") from None


def get_backend(name: str) -> Backend:
    """A new, unloaded backend instance; MissingDependency (exit code 3) if it cannot run here."""
    info = _info(name)
    status = backend_status(name)
    if not status.available:
        raise MissingDependency(f"backend {name!r} is unavailable: {status.reason}; {status.detail}")
    cls = getattr(importlib.import_module(info.module), info.class_name)
    return cls()


def best_backend(preferences: Sequence[str]) -> Backend:
    """The first available backend of `preferences` (e.g. ["tensorrt", "onnxruntime"])."""
    statuses = []
    for name in preferences:
        status = backend_status(name)
        if status.available:
            return get_backend(name)
        statuses.append(f"{name}: {status.reason}")
    raise MissingDependency(f"none of the backends {list(preferences)} can run here ({'; '.join(statuses)}); "
                            "run `edge-vad models backends` to see what to install")
