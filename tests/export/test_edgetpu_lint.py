"""EdgeTPU lint of .tflite files: parsed from the flatbuffer, checked against Coral's documented rules.

Conversions here use small synthetic networks and random calibration data: the lint judges ops,
dtypes and shapes, not accuracy (the real Lite0 model is linted in test_tflite_int8.py). The rule
tests at the end build parsed models by hand, so each documented rule is exercised on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
_EXPORT_REASON = "needs the export extra (litert-torch, ai-edge-quantizer, ai-edge-litert)"
pytest.importorskip("litert_torch", reason=_EXPORT_REASON)
pytest.importorskip("ai_edge_quantizer", reason=_EXPORT_REASON)
pytest.importorskip("ai_edge_litert", reason=_EXPORT_REASON)

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_export.edgetpu_lint import EDGETPU_OPS, lint_model, lint_tflite  # noqa: E402
from edge_vad_export.tflite_int8 import convert_full_int8  # noqa: E402
from edge_vad_export.tflite_model import OpInfo, TensorInfo, TfliteModel, read_tflite  # noqa: E402

pytestmark = pytest.mark.export


def _calib(shape: tuple[int, ...], n: int = 8) -> list[np.ndarray]:
    return [np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32)]


class _ConvBranch(nn.Module):
    """Conv, depthwise conv, transposed conv, two-ReLU ReLU6, NHWC mean: the coarse model's op mix."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.deconv = nn.ConvTranspose2d(16, 8, 2, stride=2)

    def forward(self, x):
        t = F.relu6(self.dw(F.relu6(self.conv(x))))
        y = self.deconv(t)
        f_a = F.relu(y) - F.relu(y - 6.0)
        return {"feature": f_a.permute(0, 2, 3, 1).mean(dim=(1, 2)), "heatmap": f_a}


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("lint")
    report = convert_full_int8(_ConvBranch(), torch.zeros(1, 3, 32, 32), _calib((3, 32, 32)), out / "int8.tflite",
                               float_out_path=out / "float.tflite")
    return Path(report.path), Path(report.float_path)


def test_int8_model_passes(small_models: tuple[Path, Path]) -> None:
    int8, _ = small_models
    report = lint_tflite(int8)
    assert report.passed, report.summary()
    assert report.int8_io and not report.model_issues
    assert [op.status for op in report.ops] == ["ok"] * len(read_tflite(int8).ops)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "MEAN"} <= set(report.op_histogram)
    assert report.summary().startswith("EdgeTPU lint PASS")
    data = json.loads(json.dumps(report.to_dict()))  # JSON-ready for the manifest
    assert data["passed"] is True and len(data["ops"]) == len(report.ops)


def test_float_model_fails_with_float_tensor_reasons(small_models: tuple[Path, Path]) -> None:
    _, flt = small_models
    report = lint_tflite(flt)
    assert not report.passed and not report.int8_io
    assert report.ops and all(op.status == "float_tensor" for op in report.ops)
    assert all(any("float32" in r and "int8/uint8 only" in r for r in op.reasons) for op in report.ops)
    assert report.summary().startswith("EdgeTPU lint FAIL: op 0 ")


@pytest.mark.parametrize("act, opcode", [(F.hardswish, "HARD_SWISH"), (F.gelu, "GELU")])
def test_unsupported_op_is_named(tmp_path: Path, act, opcode: str) -> None:
    class WithAct(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

        def forward(self, x):
            return act(self.conv(x))

    report = convert_full_int8(WithAct(), torch.zeros(1, 3, 16, 16), _calib((3, 16, 16)), tmp_path / "m.tflite",
                               strict=False)
    assert opcode in report.op_histogram and opcode not in EDGETPU_OPS
    lint = lint_tflite(report.path)
    assert not lint.passed
    bad = [op for op in lint.ops if op.status != "ok"]
    assert [(op.opcode, op.status) for op in bad] == [(opcode, "unsupported_op")]
    assert opcode in bad[0].reasons[0] and opcode in lint.summary()


def test_dilation_x_y_mismatch_is_a_limitation(tmp_path: Path) -> None:
    """A (1, k) temporal conv with dilation (1, d) breaks the same-dilation rule; (d, d) is identical and passes."""

    class Temporal(nn.Module):
        def __init__(self, dilation: tuple[int, int]) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 8, (1, 3), dilation=dilation)
            self.head = nn.Conv2d(8, 1, 1)

        def forward(self, x):
            return self.head(F.relu(self.conv(x))).reshape(1, -1)

    calib = _calib((16, 1, 9))
    bad = convert_full_int8(Temporal((1, 2)), torch.zeros(1, 16, 1, 9), calib, tmp_path / "bad.tflite")
    lint = lint_tflite(bad.path)
    assert not lint.passed
    flagged = [op for op in lint.ops if op.status != "ok"]
    assert [(op.opcode, op.status) for op in flagged] == [("CONV_2D", "limitation")]
    assert "dilation x=2, y=1" in flagged[0].reasons[0]

    good = convert_full_int8(Temporal((2, 2)), torch.zeros(1, 16, 1, 9), calib, tmp_path / "good.tflite")
    assert lint_tflite(good.path).passed


def test_not_a_tflite_file_is_an_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(EdgeVadError, match="not a TFLite model"):
        lint_tflite(junk)
    with pytest.raises(EdgeVadError, match="not found"):
        lint_tflite(tmp_path / "missing.tflite")


# ---------------------------------------------------------------- single rules on hand-built graphs


def _q(index: int, shape: tuple[int, ...], dtype: str = "int8", constant: bool = False, sig=None) -> TensorInfo:
    return TensorInfo(index, f"t{index}", dtype, shape, sig, constant, (0.1,), (0,))


def _model(tensors: list[TensorInfo], ops: list[OpInfo], constants: dict[int, np.ndarray] | None = None,
           subgraphs: int = 1) -> TfliteModel:
    return TfliteModel(tensors, ops, [0], [ops[-1].outputs[0]], subgraphs, {}, {}, constants or {})


def test_rule_batch_larger_than_one_fails() -> None:
    m = _model([_q(0, (2, 8, 8, 4)), _q(1, (2, 8, 8, 4))], [OpInfo(0, "RELU", (0,), (1,))])
    op = lint_model(m).ops[0]
    assert op.status == "shape" and "only the 3 innermost dimensions" in op.reasons[0]


def test_rule_dynamic_shape_fails() -> None:
    m = _model([_q(0, (1, 8, 8, 4), sig=(1, -1, -1, 4)), _q(1, (1, 8, 8, 4))], [OpInfo(0, "RELU", (0,), (1,))])
    report = lint_model(m)
    assert report.ops[0].status == "dynamic_shape" and not report.passed
    assert any("dynamic shape" in issue for issue in report.model_issues)


def test_rule_mean_over_batch_or_odd_channels_fails_but_spatial_mean_passes() -> None:
    def mean_model(axes: list[int], channels: int) -> TfliteModel:
        tensors = [_q(0, (1, 7, 7, channels)), _q(1, (2,), "int32", constant=True), _q(2, (1, channels))]
        return _model(tensors, [OpInfo(0, "MEAN", (0, 1), (2,))], {1: np.array(axes, np.int32)})

    assert lint_model(mean_model([1, 2], 1280)).passed
    z_odd = lint_model(mean_model([2, 3], 7)).ops[0]  # NCHW mean seen as NHWC: a z-reduction over 7
    assert z_odd.status == "limitation" and "multiple of 4" in z_odd.reasons[0]
    assert "batch" in lint_model(mean_model([0, 1], 8)).ops[0].reasons[0]


def test_rule_runtime_version_and_custom_ops() -> None:
    tensors = [_q(0, (1, 7, 7, 8)), _q(1, (1, 14, 14, 8))]
    tconv = _model(tensors, [OpInfo(0, "TRANSPOSE_CONV", (0,), (1,))])
    # TransposeConv arrived with runtime 13 (Coral release notes); an older target must refuse it.
    assert lint_model(tconv, target_runtime=12).ops[0].status == "unsupported_op"
    custom = _model(tensors, [OpInfo(0, "CUSTOM", (0,), (1,), custom_code="MyOp")])
    assert "custom op 'MyOp'" in lint_model(custom).ops[0].reasons[0]


def test_rule_dequantize_only_last_and_single_subgraph() -> None:
    tensors = [_q(0, (1, 8)), TensorInfo(1, "f", "float32", (1, 8), None, False), TensorInfo(2, "g", "float32", (1, 8), None, False)]
    ops = [OpInfo(0, "DEQUANTIZE", (0,), (1,)), OpInfo(1, "RELU", (1,), (2,))]
    report = lint_model(_model(tensors, ops, subgraphs=2))
    assert any("last operator" in r for r in report.ops[0].reasons)  # (its float output is flagged too)
    assert report.ops[1].status == "float_tensor"
    assert any("2 subgraphs" in issue for issue in report.model_issues)
    last = lint_model(_model(tensors[:2], ops[:1]))
    assert last.passed and not last.int8_io  # a trailing DEQUANTIZE is allowed; the output is float
