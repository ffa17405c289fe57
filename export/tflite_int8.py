"""PyTorch -> full-int8 TFLite for the Coral Edge TPU, with no TensorFlow.

litert-torch converts the module to a float TFLite model (NHWC input and 4-D outputs, named
signature I/O); ai-edge-quantizer's `static_wi8_ai8` recipe, calibrated on real frames, then
quantises every tensor: int8 weights, int8 activations, int8 input and output. The int8 input's
scale / zero point come from calibration, so the runtime must read them from the model (or the
report) and map pixels through a lookup table, never assume 1/128 (DESIGN.md trap 2).

Traps the module itself must avoid (the export never rewrites the network): ReLU6 / clamp after a
transposed conv stays float (write relu(y) - relu(y - 6); strict export refuses float ops); a mean
over the H, W axes of an NCHW tensor leaves TRANSPOSE ops and NCHW MEANs (take it over an NHWC
permute instead); a (1, k) conv with dilation (1, d) breaks the Edge TPU's same-dilation rule
(use (d, d), identical when H = 1). The last two are reported by the EdgeTPU lint in the report.
One defect of the quantizer's OUTPUT is repaired: int32 biases that overflow (see
_repair_saturated_biases).
"""

from __future__ import annotations

import importlib.metadata
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from edge_vad.errors import EdgeVadError, require_module
from edge_vad.fileio import atomic_write_bytes
from edge_vad_export.edgetpu_lint import lint_model
from edge_vad_export.tflite_model import TfliteModel, read_tflite

RECIPE = "static_wi8_ai8"  # ai-edge-quantizer: int8 weights, int8 activations, static (calibrated) ranges
MIN_CALIBRATION_SAMPLES = 8  # our floor: min/max ranges from fewer frames clip real scenes; ~64 recommended
RECOMMENDED_CALIBRATION_SAMPLES = 64  # DESIGN.md toolchain facts: calibrated on about 64 real frames
SIGNATURE_KEY = "serving_default"  # litert-torch's default signature name
# How calibration turns per-frame min/max into a tensor's range: ai-edge-quantizer's default is an
# exponential moving average (factor 0.95) of per-frame min/max; "min_max" keeps the extremes seen.
RANGE_ESTIMATORS = ("moving_average", "min_max")
EXPORT_EXTRA_HINT = "pip install 'edge-vad[export]' (litert-torch, ai-edge-quantizer, ai-edge-litert)"
TOOL_PACKAGES = ("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "litert-converter", "torch", "numpy")

PathLike = Union[str, Path]


@dataclass
class IoTensor:
    """One model input or output as the device sees it."""

    name: str  # signature name (the runtime looks tensors up by it)
    tensor_name: str  # name inside the flatbuffer
    shape: list[int]
    dtype: str
    layout: str  # "NHWC" for 4-D image-like tensors after channel-last I/O, else e.g. "NC"
    scale: Optional[float] = None  # real = scale * (q - zero_point)
    zero_point: Optional[int] = None


@dataclass
class Int8ExportReport:
    """What convert_full_int8 wrote; `as_dict()` is JSON-ready for a bundle manifest."""

    path: str
    size_bytes: int
    float_size_bytes: int
    float_path: Optional[str]
    inputs: list[IoTensor]
    outputs: list[IoTensor]
    op_histogram: dict[str, int]
    full_int8: bool
    float_ops: list[str]  # "index:OPCODE" of ops that still touch float tensors (empty when full_int8)
    recipe: str
    range_estimator: str
    calibration_samples: int
    bias_channels_repaired: int  # channels whose int32 bias overflowed and were re-quantised
    nhwc_io: bool
    seconds: dict[str, float]
    tool_versions: dict[str, str]
    edgetpu_lint: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tool_versions() -> dict[str, str]:
    """Installed versions of the export toolchain (recorded in every report)."""
    out = {}
    for pkg in TOOL_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ----------------------------------------------------------------------------------------------
# Module wrapping: channel-last input, named flat outputs
# ----------------------------------------------------------------------------------------------


def _output_names_and_tensors(outputs: Any) -> tuple[list[str], list[Any]]:
    """Flatten a module's output into (names, tensors); anything but tensors is a clear error."""
    import torch

    if isinstance(outputs, torch.Tensor):
        return ["output"], [outputs]
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):  # NamedTuple: keep its field names
        names, values = list(outputs._fields), list(outputs)
    elif isinstance(outputs, Mapping):
        names, values = [str(k) for k in outputs], list(outputs.values())
    elif isinstance(outputs, (tuple, list)):
        names, values = [f"output_{i}" for i in range(len(outputs))], list(outputs)
    else:
        raise EdgeVadError(
            f"the model returns a {type(outputs).__name__}, not a tensor; return a tensor or a tuple / NamedTuple / dict of tensors"
        )
    for name, value in zip(names, values):
        if not isinstance(value, torch.Tensor):
            raise EdgeVadError(
                f"model output '{name}' is a {type(value).__name__}, not a tensor; return only tensors from forward()"
            )
    if not values:
        raise EdgeVadError("the model returns no outputs; return at least one tensor from forward()")
    return names, values


def _make_wrapper(module: Any, input_name: str, nhwc_io: bool, output_names: list[str], nhwc_outputs: set[int]) -> Any:
    import torch

    class _ExportWrapper(torch.nn.Module):
        """NHWC frame in -> module (NCHW) -> dict of named outputs, 4-D ones back to NHWC.

        A dict output gives the TFLite signature the output names; the permutes at the edges are
        what litert-torch's to_channel_last_io inserts, here with names kept (it cannot rebuild
        NamedTuples). The converter's layout pass folds them into the NHWC graph.
        """

        def __init__(self) -> None:
            super().__init__()
            self.wrapped = module

        def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
            x = inputs[input_name]
            if nhwc_io:
                x = x.permute(0, 3, 1, 2)
            _, values = _output_names_and_tensors(self.wrapped(x))
            return {
                name: (v.permute(0, 2, 3, 1) if i in nhwc_outputs else v)
                for i, (name, v) in enumerate(zip(output_names, values))
            }

    return _ExportWrapper().eval()


# ----------------------------------------------------------------------------------------------
# Calibration data
# ----------------------------------------------------------------------------------------------


def _calibration_samples(batches: Iterable[Any], sample_shape_nchw: tuple[int, ...], nhwc_io: bool) -> list[np.ndarray]:
    """Real frames, each [C,H,W] or a batch [N,C,H,W] (NCHW, preprocessed like the example input),
    -> list of float32 [1, ...] samples in the model's input layout."""
    if batches is None:
        raise EdgeVadError("int8 export needs calibration frames: pass --calib DIR with real frames")
    samples: list[np.ndarray] = []
    for k, batch in enumerate(batches):
        arr = np.asarray(batch.detach().cpu().numpy() if hasattr(batch, "detach") else batch)
        if arr.ndim == len(sample_shape_nchw):
            arr = arr[None]
        if arr.ndim != len(sample_shape_nchw) + 1 or tuple(arr.shape[1:]) != sample_shape_nchw:
            raise EdgeVadError(
                f"calibration batch {k} has shape {list(arr.shape)}; expected [N, {', '.join(map(str, sample_shape_nchw))}] "
                "(NCHW, preprocessed like the example input)"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            raise EdgeVadError(f"calibration batch {k} is {arr.dtype}; pass preprocessed float frames, not raw pixels")
        if not np.all(np.isfinite(arr)):
            raise EdgeVadError(f"calibration batch {k} holds NaN or inf; check the frame preprocessing")
        arr = arr.astype(np.float32, copy=False)
        if nhwc_io:
            arr = arr.transpose(0, 2, 3, 1)
        samples.extend(np.ascontiguousarray(a[None]) for a in arr)
    if not samples:
        raise EdgeVadError("int8 export needs calibration frames: pass --calib DIR with real frames")
    if len(samples) < MIN_CALIBRATION_SAMPLES:
        raise EdgeVadError(
            f"int8 export needs at least {MIN_CALIBRATION_SAMPLES} calibration frames, got {len(samples)}: "
            f"pass --calib DIR with more real frames ({RECOMMENDED_CALIBRATION_SAMPLES} recommended)"
        )
    return samples


# ----------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------


def _running_min_max(qsv: dict, new_qsv: dict) -> dict:
    """Calibration update keeping the extremes seen (the library's default averages them)."""
    if not qsv:
        return new_qsv
    merged = dict(new_qsv)
    merged["min"] = np.minimum(qsv["min"], new_qsv["min"])
    merged["max"] = np.maximum(qsv["max"], new_qsv["max"])
    return merged


def _calibrate(aeq: Any, float_bytes: bytes, recipe: Any, data: dict, num_threads: int, range_estimator: str) -> dict:
    if range_estimator == "moving_average":
        qt = aeq.Quantizer(float_bytes)
        qt.load_quantization_recipe(recipe)
        return qt.calibrate(data, num_threads=num_threads)
    # Same steps as Quantizer.calibrate, with our range update (the Quantizer API has no hook for it).
    from ai_edge_quantizer import calibrator, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(float_bytes, num_threads=num_threads, qsv_update_func=_running_min_max)
    calib.calibrate(data, manager)
    return calib.get_model_qsvs()


# (activation input, weights, bias) positions of the ops whose int32 bias is input_scale * weight_scale.
_BIASED_OPS = {"CONV_2D": (0, 1, 2), "DEPTHWISE_CONV_2D": (0, 1, 2), "FULLY_CONNECTED": (0, 1, 2), "TRANSPOSE_CONV": (2, 1, 3)}
_BIAS_LIMIT = 2**30  # keep repaired biases well inside int32 (float32 scales round)
_INT8_WEIGHT_MAX = 127  # symmetric int8 weights use [-127, 127]


def _repair_saturated_biases(int8_bytes: bytes, float_bytes: bytes) -> tuple[bytes, int]:
    """Re-quantise bias channels the quantizer could not represent; returns (model, channels fixed).

    A BatchNorm-folded channel can keep near-zero weights (|w| ~ 1e-6) beside a bias of several
    units: bias / (input_scale * weight_scale) then exceeds int32. ai-edge-quantizer 0.10 clips in
    float32, where 2**31 - 1 rounds to 2**31, so a POSITIVE saturated bias wraps to INT32_MIN (the
    channel flips sign; 11 channels of the Lite0 trunk). Such a channel is a constant: widen its
    weight scale until the bias fits (its weights round to ~0, as they nearly are) and re-quantise.
    """
    flat = require_module("ai_edge_litert.tools.flatbuffer_utils", EXPORT_EXTRA_HINT)
    schema = require_module("ai_edge_litert.schema_py_generated", EXPORT_EXTRA_HINT)
    reference = read_tflite(float_bytes)
    float_consts = {t.name: reference.constant(t.index) for t in reference.tensors if t.constant}
    model = flat.read_model_from_bytearray(bytearray(int8_bytes))
    codes = {getattr(schema.BuiltinOperator, name): name for name in _BIASED_OPS}
    fixed = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = codes.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)))
            if name is None:
                continue
            xi, wi, bi = _BIASED_OPS[name]
            if len(op.inputs) <= bi or op.inputs[bi] < 0:
                continue
            x_t, w_t, b_t = (graph.tensors[op.inputs[k]] for k in (xi, wi, bi))
            fb = float_consts.get(b_t.name.decode() if isinstance(b_t.name, bytes) else b_t.name)
            if fb is None or x_t.quantization is None or w_t.quantization is None or w_t.quantization.scale is None:
                continue
            s_in = float(x_t.quantization.scale[0])
            s_w = np.asarray(w_t.quantization.scale, np.float64)
            fb = np.asarray(fb, np.float64).reshape(-1)
            if s_w.size != fb.size:  # per-tensor weight scale: one channel cannot be widened alone
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                need = np.abs(fb) > _BIAS_LIMIT * s_in * s_w
            if not need.any():
                continue
            s_w_new = np.where(need, np.abs(fb) / (s_in * _BIAS_LIMIT), s_w).astype(np.float32)
            s_b_new = (np.float32(s_in) * s_w_new).astype(np.float32)
            qdim = int(w_t.quantization.quantizedDimension)
            w_buf = model.buffers[w_t.buffer]
            q_w = np.moveaxis(np.frombuffer(bytes(w_buf.data), np.int8).reshape(w_t.shape), qdim, 0).astype(np.float64)
            ratio = (s_w / s_w_new.astype(np.float64)).reshape(-1, *([1] * (q_w.ndim - 1)))
            new_w = np.clip(np.rint(q_w * ratio), -_INT8_WEIGHT_MAX, _INT8_WEIGHT_MAX).astype(np.int8)
            w_buf.data = np.frombuffer(np.ascontiguousarray(np.moveaxis(new_w, 0, qdim)).tobytes(), np.uint8)
            new_b = np.clip(np.rint(fb / s_b_new.astype(np.float64)), -_BIAS_LIMIT, _BIAS_LIMIT).astype(np.int32)
            model.buffers[b_t.buffer].data = np.frombuffer(new_b.tobytes(), np.uint8)
            w_t.quantization.scale = s_w_new.tolist()
            b_t.quantization.scale = s_b_new.tolist()
            fixed += int(need.sum())
    if not fixed:
        return int8_bytes, 0
    return bytes(flat.convert_object_to_bytearray(model)), fixed


def _float_ops(model: TfliteModel) -> list[str]:
    """Ops that read or write a non-constant float tensor (what static quantisation left float)."""
    bad = []
    for op in model.ops:
        for i in op.inputs + op.outputs:
            if i >= 0 and not model.tensors[i].constant and model.tensors[i].dtype.startswith("float"):
                bad.append(f"{op.index}:{op.opcode}")
                break
    return bad


def _io_tensors(model: TfliteModel, names: Mapping[str, int], nhwc: bool) -> list[IoTensor]:
    out = []
    for name, idx in names.items():
        t = model.tensors[idx]
        layout = "NHWC" if (nhwc and len(t.shape) == 4) else {2: "NC", 3: "NTC", 4: "NCHW"}.get(len(t.shape), "")
        out.append(IoTensor(name, t.name, list(t.shape), t.dtype, layout,
                            t.scale[0] if len(t.scale) == 1 else None,
                            t.zero_point[0] if len(t.zero_point) == 1 else None))
    return out


def convert_full_int8(
    module: Any,
    example_input_nchw: Any,
    calibration_batches: Iterable[Any],
    out_path: PathLike,
    nhwc_io: bool = True,
    *,
    input_name: str = "image",
    float_out_path: Optional[PathLike] = None,
    strict: bool = True,
    num_threads: int = 1,
    range_estimator: str = "min_max",
) -> Int8ExportReport:
    """Convert `module` to a full-int8 .tflite at `out_path` and report what was written.

    module: a torch.nn.Module taking one float NCHW tensor; it may return a tensor, a tuple, a
        NamedTuple or a dict of tensors (names become the TFLite signature output names).
    example_input_nchw: a [1, C, H, W] (or any 4-D, batch 1) float tensor fixing the static shapes.
    calibration_batches: real frames preprocessed exactly like the example input, NCHW, each
        [C,H,W] or [N,C,H,W]; at least MIN_CALIBRATION_SAMPLES frames in all.
    nhwc_io: the model input and every 4-D output become channel-last (what the device feeds).
    strict: refuse (EdgeVadError, nothing written) when quantisation leaves any float op.
    range_estimator: "min_max" (default: the extremes seen over all calibration frames) or
        "moving_average" (the library's default, an average of per-frame min/max). Averaging
        clips small outputs: a [1, 1] logit's per-frame "range" is one value, so the averaged
        range is far narrower than its spread (a synthetic QACM-form head: logit correlation 0.88
        vs 0.999). On the Lite0 model both give the same cosines.
    """
    torch = require_module("torch", "pip install 'edge-vad[train]' (PyTorch)")
    litert_torch = require_module("litert_torch", EXPORT_EXTRA_HINT)
    aeq = require_module("ai_edge_quantizer", EXPORT_EXTRA_HINT)

    out_path = Path(out_path)
    if out_path.suffix != ".tflite":
        raise EdgeVadError(f"int8 export writes a .tflite file, got '{out_path}'; pass a path ending in .tflite")
    if not isinstance(example_input_nchw, torch.Tensor) or not example_input_nchw.is_floating_point():
        raise EdgeVadError("example_input_nchw must be a float torch tensor [1, C, H, W]")
    if example_input_nchw.shape[0] != 1:
        raise EdgeVadError(
            f"the Edge TPU runs batch 1, got an example input of batch {example_input_nchw.shape[0]}; pass a [1, C, H, W] example"
        )
    if nhwc_io and example_input_nchw.dim() != 4:
        raise EdgeVadError(
            f"nhwc_io needs a 4-D NCHW example input, got {list(example_input_nchw.shape)}; pass nhwc_io=False for other ranks"
        )
    if range_estimator not in RANGE_ESTIMATORS:
        raise EdgeVadError(f"unknown range_estimator '{range_estimator}'; choose one of: {', '.join(RANGE_ESTIMATORS)}")
    if not input_name.isidentifier():
        raise EdgeVadError(f"input_name must be a Python identifier, got '{input_name}'")

    module = module.eval()
    example = example_input_nchw.detach().float().cpu()
    samples = _calibration_samples(calibration_batches, tuple(example.shape[1:]), nhwc_io)  # fail fast, before converting

    with torch.no_grad():
        names, values = _output_names_and_tensors(module(example))
    if len(set(names)) != len(names) or any(not n.isidentifier() for n in names):
        raise EdgeVadError(f"model output names must be distinct identifiers, got {names}; rename the outputs")
    nhwc_outputs = {i for i, v in enumerate(values) if nhwc_io and v.dim() == 4}
    wrapper = _make_wrapper(module, input_name, nhwc_io, names, nhwc_outputs)
    sample = example.permute(0, 2, 3, 1).contiguous() if nhwc_io else example

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        edge_model = litert_torch.convert(wrapper, sample_kwargs={input_name: sample})
    float_bytes = bytes(edge_model.model_content())
    seconds["convert"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    recipe = aeq.recipe.static_wi8_ai8()
    data = {SIGNATURE_KEY: [{input_name: s} for s in samples]}
    calibration = _calibrate(aeq, float_bytes, recipe, data, num_threads, range_estimator)
    seconds["calibrate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    qt = aeq.Quantizer(float_bytes)
    qt.load_quantization_recipe(recipe)
    with warnings.catch_warnings():
        # The library's int32 bias overflow (its cast warns); _repair_saturated_biases fixes those channels.
        warnings.filterwarnings("ignore", message="invalid value encountered in cast", category=RuntimeWarning)
        int8_bytes = bytes(qt.quantize(calibration, enable_progress_report=False).quantized_model)
    int8_bytes, repaired = _repair_saturated_biases(int8_bytes, float_bytes)
    seconds["quantize"] = time.perf_counter() - t0

    parsed = read_tflite(int8_bytes)
    float_ops = _float_ops(parsed)
    inputs = _io_tensors(parsed, parsed.signature_inputs, nhwc_io)
    outputs = _io_tensors(parsed, parsed.signature_outputs, nhwc_io)
    io_float = [t.name for t in inputs + outputs if t.dtype not in ("int8", "uint8")]
    full_int8 = not float_ops and not io_float
    if strict and not full_int8:
        hist = ", ".join(sorted({o.split(":", 1)[1] for o in float_ops})) or "none"
        raise EdgeVadError(
            f"int8 export left {len(float_ops)} ops in float ({hist}; float I/O: {io_float or 'none'}); nothing written: "
            "rewrite them (e.g. ReLU6 after a transposed conv as relu(y) - relu(y - 6)) or pass strict=False"
        )

    atomic_write_bytes(out_path, int8_bytes)
    if float_out_path is not None:
        atomic_write_bytes(float_out_path, float_bytes)
    lint = lint_model(parsed, source=Path(out_path).name)  # the file name only: no local paths in a bundle
    return Int8ExportReport(
        path=str(out_path),
        size_bytes=len(int8_bytes),
        float_size_bytes=len(float_bytes),
        float_path=str(float_out_path) if float_out_path is not None else None,
        inputs=inputs,
        outputs=outputs,
        op_histogram=parsed.histogram(),
        full_int8=full_int8,
        float_ops=float_ops,
        recipe=RECIPE,
        range_estimator=range_estimator,
        calibration_samples=len(samples),
        bias_channels_repaired=repaired,
        nhwc_io=nhwc_io,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        tool_versions=tool_versions(),
        edgetpu_lint=lint.to_dict(),
    )


# ----------------------------------------------------------------------------------------------
# Running the .tflite on float data (parity checks)
# ----------------------------------------------------------------------------------------------


class TfliteRunner:
    """Run a .tflite by signature on FLOAT inputs: quantise with each input's scale / zero point,
    dequantise the outputs. For parity checks against PyTorch, not for the device (which feeds
    int8 frames through a lookup table)."""

    def __init__(self, path: PathLike, num_threads: int = 1):
        interp_mod = require_module("ai_edge_litert.interpreter", EXPORT_EXTRA_HINT)
        path = Path(path)
        if not path.is_file():
            raise EdgeVadError(f"TFLite model not found: {path}; pass the path of an existing .tflite file")
        self.path = path
        self._interpreter = interp_mod.Interpreter(model_path=str(path), num_threads=num_threads)
        self._runner = self._interpreter.get_signature_runner(SIGNATURE_KEY)
        self.input_details = self._runner.get_input_details()
        self.output_details = self._runner.get_output_details()

    @staticmethod
    def _qparams(detail: Mapping[str, Any]) -> tuple[float, int]:
        scale, zp = detail.get("quantization", (0.0, 0))
        return float(scale), int(zp)

    def quantize_input(self, name: str, x: np.ndarray) -> np.ndarray:
        detail = self.input_details[name]
        dtype = np.dtype(detail["dtype"])
        scale, zp = self._qparams(detail)
        if scale == 0.0:  # a float input: pass through
            return np.asarray(x, dtype=dtype)
        info = np.iinfo(dtype)
        return np.clip(np.round(np.asarray(x, np.float32) / scale) + zp, info.min, info.max).astype(dtype)

    def run(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Named float inputs in the model's layout -> named float (dequantised) outputs."""
        missing = set(self.input_details) - set(inputs)
        if missing or set(inputs) - set(self.input_details):
            raise EdgeVadError(f"{self.path.name} takes inputs {sorted(self.input_details)}, got {sorted(inputs)}")
        feed = {name: self.quantize_input(name, x) for name, x in inputs.items()}
        raw = self._runner(**feed)
        out = {}
        for name, value in raw.items():
            scale, zp = self._qparams(self.output_details[name])
            out[name] = (value.astype(np.float32) - zp) * scale if scale else value.astype(np.float32)
        return out


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample of two [N, ...] arrays (flattened per sample)."""
    a2 = np.asarray(a, np.float64).reshape(len(a), -1)
    b2 = np.asarray(b, np.float64).reshape(len(b), -1)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return np.sum(a2 * b2, axis=1) / np.maximum(den, 1e-12)


def parity_vs_torch(
    module: Any,
    tflite_path: PathLike,
    frames_nchw: Sequence[Any],
    nhwc_io: bool = True,
    input_name: str = "image",
    num_threads: int = 1,
) -> dict[str, dict[str, float]]:
    """Cosine of each output, TFLite vs PyTorch, over frames [C,H,W] / [1,C,H,W] (NCHW float).

    Returns {output name: {"cosine_mean", "cosine_min", "n"}}; 4-D outputs are compared in NHWC.
    """
    torch = require_module("torch", "pip install 'edge-vad[train]' (PyTorch)")
    runner = TfliteRunner(tflite_path, num_threads=num_threads)
    cos: dict[str, list[float]] = {}
    module = module.eval()
    for frame in frames_nchw:
        x = torch.as_tensor(np.asarray(frame, np.float32))
        x = x[None] if x.dim() == 3 else x
        with torch.no_grad():
            names, values = _output_names_and_tensors(module(x))
        feed = x.permute(0, 2, 3, 1).numpy() if nhwc_io else x.numpy()
        got = runner.run(**{input_name: feed})
        for name, ref in zip(names, values):
            ref_np = ref.permute(0, 2, 3, 1).numpy() if (nhwc_io and ref.dim() == 4) else ref.numpy()
            cos.setdefault(name, []).extend(cosine_rows(got[name], ref_np).tolist())
    return {k: {"cosine_mean": float(np.mean(v)), "cosine_min": float(np.min(v)), "n": len(v)} for k, v in cos.items()}
