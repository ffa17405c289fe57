"""onnxruntime backend: the reference backend on any host, and GPU on x86 / Jetson with the right wheel.

Providers are tried in the order TensorRT EP, CUDA EP, CPU, keeping only those that
`onnxruntime.get_available_providers()` lists (the plain PyPI wheel lists CPU only;
`onnxruntime-gpu`, or NVIDIA's Jetson wheel, adds CUDA and TensorRT). onnxruntime silently
drops a listed provider that fails to start, so `provider` reports the one the session really
uses, read back from the session.

The TensorRT EP builds an engine per graph on every session start unless its engine cache is on: it gets
trt_engine_cache_enable / trt_engine_cache_path (a folder beside the TensorRT backend's cache) and
trt_fp16_enable, the option names of onnxruntime's TensorRT EP documentation (OrtTensorRTProviderOptions,
onnxruntime >= 1.9; NVIDIA's JetPack wheels start at 1.10).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_vad.backends.base import Backend, TensorSpec
from edge_vad.errors import EdgeVadError, require_module

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install onnxruntime (onnxruntime-gpu for CUDA on x86; on a Jetson, NVIDIA's onnxruntime-gpu wheel for JetPack)"
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

# onnxruntime reports element types as "tensor(<onnx type>)"
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16", "tensor(uint16)": "uint16",
    "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool",
}


def default_providers(available: Sequence[str]) -> List[str]:
    """TensorRT EP, then CUDA EP, then CPU: those of them that this onnxruntime build has."""
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    return chosen or list(available)


def tensorrt_ep_options(fp16: bool = True, cache_dir: Optional[Path] = None) -> Dict[str, Any]:
    """The TensorRT EP's engine cache (a build takes minutes on a Jetson: once, not at every start) and fp16."""
    if cache_dir is None:
        from edge_vad.backends.trt_engine_cache import default_cache_dir

        cache_dir = default_cache_dir() / "onnxruntime"
    cache_dir.mkdir(parents=True, exist_ok=True)
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir), "trt_fp16_enable": bool(fp16)}


def with_provider_options(providers: Sequence[str], fp16: bool, cache_dir: Optional[Path]) -> List[Any]:
    return [(p, tensorrt_ep_options(fp16, cache_dir)) if p == "TensorrtExecutionProvider" else p for p in providers]


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise EdgeVadError(f"tensor '{arg.name}' has element type {arg.type}, which edge-vad does not handle; re-export with float32/int8/uint8")
    # dynamic dims come back as a name (str) or None
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
    return TensorSpec(arg.name, shape, dtype)


class OnnxRuntimeBackend(Backend):
    """An `onnxruntime.InferenceSession` behind the Backend protocol."""

    name = "onnxruntime"
    options = {
        "threads": "intra-op threads (default: onnxruntime's choice, one per core)",
        "providers": "execution providers to use, in order (default: TensorRT, CUDA, CPU where present)",
        "tensorrt_fp16": "TensorRT execution provider: fp16 engines (default True)",
        "tensorrt_cache_dir": "TensorRT execution provider: engine cache folder (default: beside the TensorRT backend's)",
    }

    def __init__(self) -> None:
        super().__init__()
        self._session: Any = None
        self.provider: Optional[str] = None  # the provider the session actually runs on

    def _load(self, path: Path, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None,
              tensorrt_fp16: bool = True, tensorrt_cache_dir: Optional[Path] = None,
              ) -> Tuple[List[TensorSpec], List[TensorSpec]]:
        ort = require_module("onnxruntime", INSTALL_HINT)
        available = list(ort.get_available_providers())
        if providers is None:
            providers = default_providers(available)
        else:
            providers = list(providers)
            missing = [p for p in providers if p not in available]
            if missing or not providers:
                raise EdgeVadError(f"onnxruntime providers {missing or providers} are not available here; this build has {available}")
        opts = ort.SessionOptions()
        # No busy-waiting between calls: onnxruntime's pool threads otherwise spin on the cores that the
        # decoder, the clip writer and the fine worker need. On 2 cores, `edge-vad run` on the sample stream
        # went from 30-32 fps (2 threads, spinning) to 54-61 fps, at 40 % of the CPU time (bench child).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            if int(threads) < 1:
                raise EdgeVadError(f"onnxruntime: threads must be >= 1, found {threads}")
            opts.intra_op_num_threads = int(threads)
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=opts,
                providers=with_provider_options(providers, tensorrt_fp16,
                                                Path(tensorrt_cache_dir) if tensorrt_cache_dir else None))
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / ... types
            raise EdgeVadError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0]}; re-export the model or check the file") from None
        used = self._session.get_providers()
        self.provider = used[0] if used else None
        if self.provider != providers[0]:
            log.warning("onnxruntime: asked for %s, running on %s (onnxruntime fell back)", providers[0], self.provider)
        return ([_spec(a) for a in self._session.get_inputs()], [_spec(a) for a in self._session.get_outputs()])

    def _run(self, feeds: Dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        names = [s.name for s in self._outputs]
        return dict(zip(names, self._session.run(names, feeds)))

    def _close(self) -> None:
        self._session = None
        self.provider = None
