"""AFED teacher and QACM student: shapes, causality, streaming forms equal the parallel forms."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from edge_vad.constants import QACM_LAYERS  # noqa: E402
from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.coarse_heads import AFEDTeacher, QACMStudent  # noqa: E402

IN_DIM = 24


def _perturb_after(x, t: int):
    x2 = x.clone()
    x2[:, t + 1:] = 5.0 * torch.randn_like(x2[:, t + 1:])
    return x2


def test_afed_shapes_and_streaming_equals_parallel():
    torch.manual_seed(0)
    model = AFEDTeacher(IN_DIM, dim=32).eval()
    x = torch.randn(3, 50, IN_DIM)
    with torch.no_grad():
        logits = model(x)
        state = model.init_state(3)
        steps = []
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)
            steps.append(y)
    assert logits.shape == (3, 50)
    assert state.shape == (2, 4, 3, 32)
    streamed = torch.stack(steps, dim=1)
    assert ((streamed - logits).abs().max() / logits.abs().max()).item() <= 1e-4


@pytest.mark.parametrize("t", [0, 20])
def test_afed_causal(t):
    torch.manual_seed(1)
    model = AFEDTeacher(IN_DIM, dim=32).eval()
    x = torch.randn(2, 40, IN_DIM)
    with torch.no_grad():
        a, b = model(x), model(_perturb_after(x, t))
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-3


def test_qacm_structure():
    model = QACMStudent(IN_DIM, hidden=16, kernel=3, dilations=(1, 2, 4))
    temporal = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[1] > 1]
    assert len(temporal) == QACM_LAYERS
    assert all(m.kernel_size[0] == 1 for m in temporal)  # (1, k) kernels on [B, C, 1, T]
    assert not any(isinstance(m, torch.nn.Conv1d) for m in model.modules())  # Conv1d leaves TRANSPOSE ops
    assert model.window == 1 + 2 * (1 + 2 + 4) == 15


def test_qacm_default_size_is_small():
    """1280-d pooled EfficientNet-Lite0 features in: the student stays in the brief's 0.1-0.5 M parameters."""
    n = sum(p.numel() for p in QACMStudent(1280).parameters())
    assert 100_000 <= n <= 500_000, n


def test_qacm_shapes_and_window_form():
    torch.manual_seed(2)
    model = QACMStudent(IN_DIM, hidden=16).eval()
    w = model.window
    x = torch.randn(3, 40, IN_DIM)
    with torch.no_grad():
        logits = model(x)
        last = model.forward_window(x[:, -w:])
        middle = model.forward_window(x[:, 20 - w + 1: 21])
    assert logits.shape == (3, 40) and last.shape == (3,)
    torch.testing.assert_close(last, logits[:, -1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(middle, logits[:, 20], rtol=1e-5, atol=1e-6)


def test_qacm_stream_start_repeats_first_frame():
    """Before `window` frames exist, forward behaves as if the first frame filled the window."""
    torch.manual_seed(3)
    model = QACMStudent(IN_DIM, hidden=16).eval()
    w = model.window
    x = torch.randn(2, 5, IN_DIM)
    with torch.no_grad():
        logits = model(x)
        filled = torch.cat([x[:, :1].expand(-1, w - 3, -1), x[:, :3]], dim=1)  # window ending at t = 2
        expected = model.forward_window(filled)
    torch.testing.assert_close(logits[:, 2], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [3, 20, 30])
def test_qacm_causal_and_windowed(t):
    torch.manual_seed(4)
    model = QACMStudent(IN_DIM, hidden=16).eval()
    w = model.window
    x = torch.randn(2, 40, IN_DIM)
    with torch.no_grad():
        base = model(x)
        after = model(_perturb_after(x, t))
        # frames older than the window do not matter either
        x_old = x.clone()
        if t - w >= 0:
            x_old[:, 1: t - w + 1] = 5.0 * torch.randn_like(x_old[:, 1: t - w + 1])
        older = model(x_old)
    torch.testing.assert_close(after[:, : t + 1], base[:, : t + 1], rtol=0, atol=0)
    assert (after[:, t + 1:] - base[:, t + 1:]).abs().max() > 1e-4
    torch.testing.assert_close(older[:, t], base[:, t], rtol=0, atol=0)


def test_qacm_gradients_and_bad_inputs():
    model = QACMStudent(IN_DIM, hidden=16)
    model(torch.randn(2, 30, IN_DIM)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(EdgeVadError):
        QACMStudent(IN_DIM, dilations=(1, 2))
    with pytest.raises(EdgeVadError):
        model.forward_window(torch.randn(1, model.window + 1, IN_DIM))
