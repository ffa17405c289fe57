"""Enhanced RWKV: parallel form == recurrent form, causality, long-stream stability, gradients, ONNX export."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from edge_vad.constants import RWKV_BLOCKS  # noqa: E402
from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.rwkv import STATE_ROWS, EnhancedRWKV  # noqa: E402

PARALLEL_VS_RECURRENT_RTOL = 1e-4  # max|a - b| / max|b|, fp32 (the brief's bound)


def rel_err(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def random_rwkv(dim: int = 32, seed: int = 0, key_gain: float = 2.0, chunk: int | None = None) -> EnhancedRWKV:
    """Random weights at a realistic scale, with non-trivial decays (w from -0.02 to -12 per step) and bonuses."""
    torch.manual_seed(seed)
    model = EnhancedRWKV(dim) if chunk is None else EnhancedRWKV(dim, chunk=chunk)
    with torch.no_grad():
        for block in model.blocks:
            block.time_decay.uniform_(-4.0, 2.5)
            block.time_first.uniform_(-2.0, 2.0)
            for mix in (block.mix_k, block.mix_v, block.mix_r):
                mix.uniform_(0.0, 1.0)
            for lin in (block.key, block.value, block.receptance, block.output):
                lin.weight.normal_(0.0, dim**-0.5)
            block.key.weight.mul_(key_gain)
            for norm in (block.norm,):
                norm.weight.normal_(1.0, 0.2)
                norm.bias.normal_(0.0, 0.2)
    return model.eval()


def run_recurrent(model: EnhancedRWKV, x, state=None):
    state = model.init_state(x.shape[0]) if state is None else state
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = model.step(x[:, t], state)
            outs.append(y)
    return torch.stack(outs, dim=1), state


def test_state_layout():
    model = EnhancedRWKV(8)
    state = model.init_state(batch=3)
    assert STATE_ROWS == ("prev_x", "num", "den", "max_exp")
    assert state.shape == (RWKV_BLOCKS, 4, 3, 8)
    assert len(model.blocks) == RWKV_BLOCKS == 2
    assert not any("channel" in name.lower() for name, _ in model.named_modules())


def test_parallel_matches_recurrent_T1024():
    torch.set_num_threads(1)
    model = random_rwkv(dim=32, seed=1)
    x = 2.0 * torch.randn(2, 1024, 32)
    with torch.no_grad():
        par = model(x)
    rec, _ = run_recurrent(model, x)
    assert par.shape == (2, 1024, 32)
    # the comparison must be about something: outputs vary along time and the decays are not all trivial
    assert rec.std(dim=1).mean() > 0.1
    assert rel_err(par, rec) <= PARALLEL_VS_RECURRENT_RTOL


@pytest.mark.parametrize("chunk", [1, 3, 8, 64])
def test_parallel_matches_recurrent_any_chunk(chunk):
    """Lengths that are not multiples of the chunk (front padding) and chunks longer than the sequence."""
    model = random_rwkv(dim=16, seed=2, chunk=chunk)
    x = torch.randn(2, 45, 16)
    with torch.no_grad():
        par = model(x)
    rec, _ = run_recurrent(model, x)
    assert rel_err(par, rec) <= PARALLEL_VS_RECURRENT_RTOL


def test_parallel_matches_recurrent_with_large_keys():
    """Keys above 88: e^k overflows float32, so only the running-max form can agree. (Far larger keys agree
    less closely in fp32: the exponents themselves lose digits, e.g. about 1e-4 at |k| ~ 1000.)"""
    model = random_rwkv(dim=16, seed=3, key_gain=30.0)
    x = torch.randn(1, 300, 16)
    with torch.no_grad():
        par = model(x)
        k = model.blocks[0].key(model.blocks[0].norm(x))
    assert k.abs().max() > 100  # e^100 is beyond float32 (max about e^88.7)
    rec, _ = run_recurrent(model, x)
    assert torch.isfinite(par).all()
    assert rel_err(par, rec) <= PARALLEL_VS_RECURRENT_RTOL


def test_forward_chunk_continues_a_stream():
    """Parallel blocks of frames with a carried state == one pass == frame by frame, state included."""
    model = random_rwkv(dim=16, seed=4)
    x = torch.randn(2, 70, 16)
    with torch.no_grad():
        full = model(x)
        y1, s1 = model.forward_chunk(x[:, :29], model.init_state(2))
        y2, s2 = model.forward_chunk(x[:, 29:], s1)
        # a state made by the parallel form drives the recurrent form (and vice versa)
        _, s_rec = run_recurrent(model, x[:, :29])
        y2_from_rec, _ = model.forward_chunk(x[:, 29:], s_rec)
        y_step, _ = model.step(x[:, 29], s1)
    assert rel_err(torch.cat([y1, y2], dim=1), full) <= PARALLEL_VS_RECURRENT_RTOL
    assert rel_err(y2_from_rec, full[:, 29:]) <= PARALLEL_VS_RECURRENT_RTOL
    assert rel_err(y_step, full[:, 29]) <= PARALLEL_VS_RECURRENT_RTOL
    assert s2.shape == s1.shape == (RWKV_BLOCKS, 4, 2, 16)


@pytest.mark.parametrize("t", [0, 7, 8, 50])
def test_causal(t):
    model = random_rwkv(dim=16, seed=5)
    x = torch.randn(1, 64, 16)
    x2 = x.clone()
    x2[:, t + 1:] = 10.0 * torch.randn_like(x2[:, t + 1:])
    with torch.no_grad():
        a, b = model(x), model(x2)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    if t + 1 < x.shape[1]:
        assert (a[:, t + 1:] - b[:, t + 1:]).abs().max() > 1e-2  # the change is visible afterwards


def test_ten_thousand_steps_stay_finite():
    torch.set_num_threads(1)
    model = random_rwkv(dim=8, seed=6, key_gain=50.0)
    state = model.init_state(1)
    gen = torch.Generator().manual_seed(0)
    x = 1e3 * torch.randn(10_000, 1, 8, generator=gen)
    with torch.inference_mode():
        for t in range(x.shape[0]):
            y, state = model.step(x[t], state)
            if t % 1000 == 999:
                assert torch.isfinite(y).all() and torch.isfinite(state).all(), f"non-finite at step {t}"
    # the running-max exponent really moved (keys of hundreds), yet everything stayed finite
    assert state[:, STATE_ROWS.index("max_exp")].abs().max() > 88


def test_parallel_T4096_finite():
    torch.set_num_threads(1)
    model = random_rwkv(dim=16, seed=7, key_gain=50.0)
    x = 1e3 * torch.randn(1, 4096, 16)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 4096, 16)
    assert torch.isfinite(y).all()


def test_gradients_reach_every_parameter():
    model = random_rwkv(dim=16, seed=8).train()
    x = torch.randn(2, 40, 16, requires_grad=True)
    model(x).pow(2).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_parallel_gradients_match_recurrent():
    """The detached running-max exponents are pure stabilisers: both forms give the same gradients."""
    model = random_rwkv(dim=8, seed=10, chunk=4)
    x = torch.randn(1, 23, 8)
    weights = torch.randn(1, 23, 8)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    g_par = grads((model(x) * weights).sum())
    state, outs = model.init_state(1), []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        outs.append(y)
    g_rec = grads((torch.stack(outs, dim=1) * weights).sum())
    for name, g in g_rec.items():
        assert rel_err(g_par[name], g) <= 1e-4, name


def test_default_init_gradients_flow():
    model = EnhancedRWKV(16)
    x = torch.randn(1, 20, 16)
    model(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.blocks[0].key.weight.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(EdgeVadError):
        EnhancedRWKV(0)
    with pytest.raises(EdgeVadError):
        EnhancedRWKV(8)(torch.randn(1, 4, 9))


class _Step(torch.nn.Module):
    def __init__(self, model: EnhancedRWKV):
        super().__init__()
        self.model = model

    def forward(self, x_t, state):
        return self.model.step(x_t, state)


def test_step_exports_to_onnx(tmp_path):
    onnx = pytest.importorskip("onnx", reason="needs the export extra (onnx)")
    ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime")
    model = random_rwkv(dim=16, seed=9)
    path = tmp_path / "rwkv_step.onnx"
    state = model.init_state(1)
    torch.onnx.export(_Step(model), (torch.randn(1, 16), state), str(path), dynamo=False, opset_version=17,
                      input_names=["x", "state"], output_names=["y", "new_state"])
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["x", "state"] and [o.name for o in graph.output] == ["y", "new_state"]
    assert not {n.op_type for n in graph.node} & {"Loop", "If", "Scan"}  # straight-line graph
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 30, 16)
    s_torch, s_ort = state, state.numpy()
    for t in range(x.shape[1]):
        with torch.no_grad():
            y_torch, s_torch = model.step(x[:, t], s_torch)
        y_ort, s_ort = sess.run(None, {"x": x[:, t].numpy(), "state": s_ort})
        assert rel_err(torch.from_numpy(y_ort), y_torch) <= 1e-5
    assert torch.isfinite(torch.from_numpy(s_ort)).all()
