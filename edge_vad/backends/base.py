"""The one inference-backend protocol every runtime backend implements (DESIGN.md convention 1).

A backend loads one model file, describes its inputs and outputs as `TensorSpec`s, and runs it.
At the API, tensors are float32 (the dtype the pipeline works in): quantised tensors are
(de)quantised here with the tensor's own scale and zero point, so callers never see int8
unless they ask for it with `infer(..., raw=True)`. Feed checks (names, shapes, dtypes) also
live here, once, so every backend rejects a bad feed with the same one-line message.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_vad.errors import EdgeVadError

log = logging.getLogger(__name__)

Dim = Optional[int]  # None = dynamic (any size)
QuantParams = Tuple[float, int]


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the model file declares it.

    `dtype` is the numpy name of the model's own element type ("float32", "int8", ...);
    `scale` / `zero_point` are set only for an affine-quantised tensor.
    """

    name: str
    shape: Tuple[Dim, ...]
    dtype: str
    scale: Optional[float] = None
    zero_point: Optional[int] = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def api_dtype(self, raw: bool = False) -> str:
        """The dtype callers exchange: float32, except raw quantised data and non-float tensors."""
        if raw or not (self.quantized or np.issubdtype(np.dtype(self.dtype), np.floating)):
            return self.dtype
        return "float32"

    def describe(self, raw: bool = False) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}[{dims}] {self.api_dtype(raw)}"


def _int_range(dtype: str) -> Tuple[int, int]:
    kind = np.dtype(dtype)
    if kind not in (np.dtype(np.int8), np.dtype(np.uint8)):
        raise EdgeVadError(f"quantised tensors must be int8 or uint8, found {dtype}; re-export the model with int8/uint8 I/O")
    info = np.iinfo(kind)
    return int(info.min), int(info.max)


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """q = clip(round(x / scale) + zero_point) into the int8 or uint8 range (ties round to even, as ONNX does)."""
    if not scale > 0:
        raise EdgeVadError(f"quantisation scale must be > 0, found {scale}; check the model's quantisation parameters")
    lo, hi = _int_range(dtype)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """x = (q - zero_point) * scale, as float32."""
    return ((np.asarray(q).astype(np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


def _shape_ok(expected: Sequence[Dim], found: Sequence[int]) -> bool:
    return len(expected) == len(found) and all(e is None or e == f for e, f in zip(expected, found))


def check_feeds(feeds: Mapping[str, Any], specs: Sequence[TensorSpec], raw: bool = False) -> None:
    """Raise EdgeVadError naming expected vs found for a feed whose names, shapes or dtypes are off."""
    expected = {s.name for s in specs}
    found = set(feeds)
    if expected != found:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise EdgeVadError(
            f"model inputs are {sorted(expected)} but the feed has {sorted(found)}"
            f" (missing {missing}, unexpected {extra}); feed exactly the model's input names"
        )
    for spec in specs:
        arr = feeds[spec.name]
        if not isinstance(arr, np.ndarray):
            raise EdgeVadError(f"input '{spec.name}': expected a numpy array, found {type(arr).__name__}")
        if not _shape_ok(spec.shape, arr.shape):
            raise EdgeVadError(f"input '{spec.name}': expected shape {_fmt_shape(spec.shape)}, found {tuple(arr.shape)}")
        want = spec.api_dtype(raw)
        if arr.dtype != np.dtype(want):
            hint = " (pass raw=True to feed already-quantised data)" if spec.quantized and not raw else ""
            raise EdgeVadError(f"input '{spec.name}': expected dtype {want}, found {arr.dtype}{hint}")


def _fmt_shape(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


class Backend(abc.ABC):
    """Load a model, describe its tensors, run it, release it. Use as a context manager.

    Subclasses implement `_load` (open the file, return the input and output specs),
    `_run` (model-dtype arrays in, model-dtype arrays out) and `_close`; this class does the
    option checks, the feed checks and the (de)quantisation.

    Options every backend accepts in `load`: `quant={tensor_name: (scale, zero_point)}` sets
    the quantisation of tensors whose model file does not carry it (an ONNX model with int8
    I/O, say; the bundle manifest has these numbers).
    """

    name: ClassVar[str] = ""
    #: load() options this backend accepts, name -> one-line help (unknown ones are errors)
    options: ClassVar[Dict[str, str]] = {}

    def __init__(self) -> None:
        self._inputs: Optional[List[TensorSpec]] = None
        self._outputs: List[TensorSpec] = []
        self.model_path: Optional[Path] = None

    # -- lifecycle ---------------------------------------------------------------------
    def load(self, model_path: Path, **options: Any) -> "Backend":
        """Open `model_path`; returns self so `with get_backend(n).load(p) as b:` reads well."""
        path = Path(model_path)
        if self._inputs is not None:
            raise EdgeVadError(f"backend {self.name} already has {self.model_path} loaded; use a new backend instance")
        if not path.is_file():
            raise EdgeVadError(f"model file not found: {path}; check the bundle folder or the path you passed")
        quant = options.pop("quant", None) or {}
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise EdgeVadError(f"backend {self.name}: unknown option(s) {unknown}; it accepts {sorted(self.options) + ['quant']}")
        inputs, outputs = self._load(path, **options)
        self._inputs, self._outputs = _apply_quant(list(inputs), list(outputs), quant, self.name)
        self.model_path = path
        log.info("%s: loaded %s; inputs %s; outputs %s", self.name, path,
                 [s.describe() for s in self._inputs], [s.describe() for s in self._outputs])
        return self

    def close(self) -> None:
        """Release the model (idempotent)."""
        if self._inputs is not None:
            self._close()
        self._inputs, self._outputs = None, []

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- description -------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._inputs is not None

    @property
    def inputs(self) -> List[TensorSpec]:
        return list(self._require_loaded())

    @property
    def outputs(self) -> List[TensorSpec]:
        self._require_loaded()
        return list(self._outputs)

    def _require_loaded(self) -> List[TensorSpec]:
        if self._inputs is None:
            raise EdgeVadError(f"backend {self.name}: no model loaded; call load(model_path) first")
        return self._inputs

    # -- running -----------------------------------------------------------------------
    def infer(self, feeds: Mapping[str, np.ndarray], raw: bool = False) -> Dict[str, np.ndarray]:
        """Run the model once. float32 in and out; with raw=True, quantised tensors stay quantised."""
        results = self._run(self.model_feeds(feeds, raw))
        return {s.name: _from_model(results[s.name], s, raw) for s in self._outputs}

    def model_feeds(self, feeds: Mapping[str, np.ndarray], raw: bool = False) -> Dict[str, np.ndarray]:
        """The checked feeds in the model's dtypes: the caller's arrays themselves (no copy) when they already
        are contiguous arrays of the model's dtype, as the runtime's preprocessed frames are."""
        inputs = self._require_loaded()
        check_feeds(feeds, inputs, raw)
        return {s.name: _to_model(feeds[s.name], s, raw) for s in inputs}

    # -- what subclasses write -------------------------------------------------------------
    @abc.abstractmethod
    def _load(self, path: Path, **options: Any) -> Tuple[Sequence[TensorSpec], Sequence[TensorSpec]]:
        """Open the model; return (inputs, outputs)."""

    @abc.abstractmethod
    def _run(self, feeds: Dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Run on model-dtype arrays (already checked); return every output by name."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Free what _load acquired."""


def _to_model(arr: np.ndarray, spec: TensorSpec, raw: bool) -> np.ndarray:
    if spec.quantized and not raw:
        return quantize(arr, spec.scale, spec.zero_point, spec.dtype)  # type: ignore[arg-type]
    return np.ascontiguousarray(arr, dtype=spec.dtype)


def _from_model(arr: np.ndarray, spec: TensorSpec, raw: bool) -> np.ndarray:
    if spec.quantized and not raw:
        return dequantize(arr, spec.scale, spec.zero_point)  # type: ignore[arg-type]
    return np.asarray(arr).astype(spec.api_dtype(raw), copy=False)


def _apply_quant(inputs: List[TensorSpec], outputs: List[TensorSpec], quant: Mapping[str, QuantParams],
                 backend: str) -> Tuple[List[TensorSpec], List[TensorSpec]]:
    names = {s.name for s in inputs + outputs}
    unknown = sorted(set(quant) - names)
    if unknown:
        raise EdgeVadError(f"backend {backend}: quant given for {unknown}, but the model's tensors are {sorted(names)}")

    def fix(spec: TensorSpec) -> TensorSpec:
        if spec.name not in quant:
            return spec
        scale, zero_point = quant[spec.name]
        _int_range(spec.dtype)  # only int8/uint8 tensors can carry a scale
        if not float(scale) > 0:
            raise EdgeVadError(f"backend {backend}: quant scale for '{spec.name}' must be > 0, found {scale}")
        return replace(spec, scale=float(scale), zero_point=int(zero_point))

    return [fix(s) for s in inputs], [fix(s) for s in outputs]
