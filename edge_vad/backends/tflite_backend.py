"""TFLite backends: `tflite` (CPU, XNNPACK) and `edgetpu` (the Coral Edge TPU delegate).

Interpreter: `ai_edge_litert.interpreter` (PyPI `ai-edge-litert`, works with numpy 2), else
the older `tflite_runtime.interpreter` (PyPI `tflite-runtime`, needs numpy < 2).

Edge TPU: the delegate library `libedgetpu.so.1` and Google's `pycoral` come from Coral's apt
repository on the device (`apt-get install libedgetpu1-std`, after adding
packages.cloud.google.com/apt coral-edgetpu-stable); they are NOT on PyPI, and the PyPI package
named `pycoral` is an unrelated project: never depend on it. We load the delegate the way
pycoral's `make_interpreter` does: `load_delegate('libedgetpu.so.1', {'device': 'usb:0'})`.
The model must have been compiled with `edgetpu_compiler`, or every op silently runs on the CPU.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_vad.backends.base import Backend, TensorSpec
from edge_vad.backends.edgetpu_runtime import (CORAL_RUNTIME_HINT, EDGETPU_LIBRARY, edgetpu_interpreter,  # noqa: F401 (re-exported)
                                               edgetpu_library_path, make_edgetpu_delegate,
                                               runtime_version, take_delegate, validate_edgetpu_device)
from edge_vad.bundle.edgetpu_compile import EDGETPU_CUSTOM_OP
from edge_vad.errors import EdgeVadError, MissingDependency

log = logging.getLogger(__name__)

INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
INSTALL_HINT = "pip install ai-edge-litert (or pip install 'edge-vad[coral]')"


def interpreter_module() -> Any:
    """The first importable TFLite interpreter module, or MissingDependency saying what to install."""
    reasons = []
    for name in INTERPRETER_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            reasons.append(f"{name}: {exc}")
        except Exception as exc:  # tflite_runtime built for numpy 1 fails in odd ways under numpy 2
            reasons.append(f"{name}: {type(exc).__name__}: {exc} (tflite-runtime needs numpy<2)")
    raise MissingDependency(f"no TFLite interpreter ({'; '.join(reasons)}); install it with: {INSTALL_HINT}")


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    shape = detail.get("shape_signature", detail["shape"])
    dims = tuple(int(d) if int(d) >= 0 else None for d in shape)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = np.dtype(detail["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8)) and scale > 0
    return TensorSpec(detail["name"], dims, np.dtype(detail["dtype"]).name,
                      float(scale) if quantized else None, int(zero_point) if quantized else None)


class TFLiteBackend(Backend):
    """A TFLite interpreter on the CPU."""

    name = "tflite"
    options = {"num_threads": "interpreter threads (default: the interpreter's choice)"}

    def __init__(self) -> None:
        super().__init__()
        self._interp: Any = None
        self._index: Dict[str, int] = {}

    def _load(self, path: Path, num_threads: Optional[int] = None) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        if num_threads is not None and int(num_threads) < 1:
            raise EdgeVadError(f"tflite: num_threads must be >= 1, found {num_threads}")
        module = interpreter_module()
        return self._open(module, path, num_threads=num_threads, delegates=None)

    def _open(self, module: Any, path: Path, num_threads: Optional[int],
              delegates: Optional[Sequence[Any]]) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        kwargs: Dict[str, Any] = {"model_path": str(path)}
        if num_threads is not None:
            kwargs["num_threads"] = int(num_threads)
        if delegates:
            kwargs["experimental_delegates"] = list(delegates)
        try:
            self._interp = module.Interpreter(**kwargs)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EdgeVadError(f"{self.name}: cannot load {path}: {str(exc).splitlines()[0]}; check the .tflite file") from None
        ins = self._interp.get_input_details()
        outs = self._interp.get_output_details()
        self._index = {d["name"]: int(d["index"]) for d in list(ins) + list(outs)}
        return [_spec(d) for d in ins], [_spec(d) for d in outs]

    def _run(self, feeds: Dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        for name, arr in feeds.items():
            self._interp.set_tensor(self._index[name], arr)
        self._interp.invoke()
        return {s.name: self._interp.get_tensor(self._index[s.name]) for s in self._outputs}

    def _close(self) -> None:
        self._interp = None
        self._index = {}


_versions_logged = threading.Event()  # the interpreter / libedgetpu pair is logged once per process


def _log_pair(module_name: str, verdict: object) -> None:
    if _versions_logged.is_set():
        return
    _versions_logged.set()
    runtime = runtime_version() or "edgetpu_version() not available"
    line = getattr(verdict, "line", str(verdict))
    if getattr(verdict, "known_to_work", False):
        log.info("edgetpu: %s; interpreter module %s; %s", line, module_name, runtime)
    else:
        log.warning("edgetpu: %s; interpreter module %s; %s", line, module_name, runtime)


class EdgeTpuBackend(TFLiteBackend):
    """A TFLite interpreter with the Coral Edge TPU delegate (model compiled by edgetpu_compiler).

    Of the interpreters installed, the one whose pair with the installed libedgetpu is best known runs it
    (edge_vad.backends.coral_pairs); the versions loaded are logged once, as a WARNING when the pair is not known
    to work. The delegate is the one backend selection already loaded, if it is waiting (edgetpu_runtime)."""

    name = "edgetpu"
    options = {"device": "'usb', 'usb:N', 'pci', 'pci:N' or ':N' (default: the first Edge TPU found)"}

    def _load(self, path: Path, device: Optional[str] = None) -> Tuple[List[TensorSpec], List[TensorSpec]]:  # type: ignore[override]
        device = validate_edgetpu_device(device)
        if EDGETPU_CUSTOM_OP not in path.read_bytes():
            raise EdgeVadError(f"{path} is not compiled for the Edge TPU (no edgetpu-custom-op); run `edge-vad models "
                               "compile-edgetpu` on its bundle, or use the 'tflite' backend for the CPU")
        module_name, verdict = edgetpu_interpreter()
        if module_name is None:
            raise MissingDependency(f"no TFLite interpreter for the Edge TPU; install it with: {INSTALL_HINT}")
        module = importlib.import_module(f"{module_name}.interpreter")
        _log_pair(module_name, verdict)
        delegate = take_delegate(device, module.load_delegate)
        self.device = device
        return self._open(module, path, num_threads=None, delegates=[delegate])
