"""Enhanced RWKV of TCVADS (paper Sec. IV-A): RWKV_BLOCKS TimeMix blocks, no ChannelMix, final LayerNorm.

Each block is an RWKV-4 TimeMix with a pre-LayerNorm and a residual:

    xx   = LN(x);  x_prev = xx shifted one step back (token shift)
    k, v, r = W_k(mix_k(xx, x_prev)), W_v(mix_v(...)), W_r(mix_r(...))
    wkv_t = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u + k_t} v_t) / (same with v = 1)
    x    = x + W_o(sigmoid(r) * wkv)

with a per-channel log-decay w = -exp(time_decay) < 0 and bonus u = time_first.

Two forms that agree numerically (tests/models/test_rwkv.py):
- `forward` / `forward_chunk`: the parallel (training) form, a chunked scan. Inside chunks of C steps the
  WKV is evaluated in closed form (a C x C exponent table per chunk, never T x T); the state between chunks
  is carried by a log-depth prefix scan over chunk summaries. Work and memory O(T * C * d).
- `step`: the recurrent (streaming) form, one frame at a time, with all recurrent state in ONE tensor
  (see STATE_LAYOUT) so an ONNX export of `step` has a single state input and output.

Both keep the WKV sums as (mantissa, running-max exponent) pairs, as RWKV does, so long streams and
large keys neither overflow nor underflow. The WKV itself is always evaluated in float32 or wider.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from edge_vad.constants import RWKV_BLOCKS
from edge_vad.errors import EdgeVadError

# Rows of the recurrent state tensor [n_blocks, 4, B, d], per block:
#   prev_x  : the block's LayerNorm-ed input at the previous step (token shift)
#   num     : WKV numerator   sum_i e^{k_i - max_exp} v_i  (decayed)
#   den     : WKV denominator sum_i e^{k_i - max_exp}      (decayed)
#   max_exp : the running-max exponent shared by num and den
STATE_ROWS = ("prev_x", "num", "den", "max_exp")
STATE_LAYOUT = "state[n_blocks, 4, batch, dim]; rows per block: " + ", ".join(STATE_ROWS)
PREV_X, NUM, DEN, MAX_EXP = range(len(STATE_ROWS))

# "Empty sum" exponent: exp(EMPTY_EXP - anything real) == 0 in float32, and it stays finite (no inf - inf).
EMPTY_EXP = -1e38
DEFAULT_CHUNK = 4  # parallel-form chunk length C: memory O(T*C*d), scan depth log2(T/C). On 2 CPU cores C = 4 was
# the fastest of 1, 2, 4, 8 or within 2 % of it at every shape tried (T 250-1750, d 256-512, batch 1-8, with and
# without grad), 15-25 % faster than 8. The result does not depend on C beyond float rounding.


def _wkv_dtype(dtype: torch.dtype) -> torch.dtype:
    """WKV sums need float32 range at least (EMPTY_EXP and e^k overflow half precision)."""
    return torch.promote_types(dtype, torch.float32)


def _as(x: Tensor, dtype: torch.dtype) -> Tensor:
    """x in dtype; no-op (and no Cast node in a traced export) when it already is."""
    return x if x.dtype == dtype else x.to(dtype)


def _logaddexp_scaled(a1: Tensor, b1: Tensor, p1: Tensor, a2: Tensor, b2: Tensor, p2: Tensor):
    """(a1, b1) e^{p1} + (a2, b2) e^{p2} as mantissas over a shared exponent max(p1, p2)."""
    p = torch.maximum(p1, p2)
    e1 = torch.exp(p1 - p)
    e2 = torch.exp(p2 - p)
    return a1 * e1 + a2 * e2, b1 * e1 + b2 * e2, p


def wkv_parallel(w: Tensor, u: Tensor, k: Tensor, v: Tensor, num0: Tensor, den0: Tensor, exp0: Tensor,
                 chunk: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exact WKV over a sequence, chunked. Returns (wkv [B,T,d], num, den, max_exp [B,d] after the last step).

    w: log-decay per step (< 0) [d]; u: bonus [d]; k, v: [B, T, d]; (num0, den0, exp0): state before step 0.
    """
    batch, length, dim = k.shape
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    if pad:
        # Pad at the FRONT with steps that add nothing (k = EMPTY_EXP, v = 0); the initial state is pre-scaled
        # by e^{-pad*w} so that after decaying through the pad steps it is exactly the given state.
        k = torch.cat([k.new_full((batch, pad, dim), EMPTY_EXP), k], dim=1)
        v = torch.cat([v.new_zeros((batch, pad, dim)), v], dim=1)
        exp0 = exp0 - pad * w
    kc = k.view(batch, n_chunks, chunk, dim)
    vc = v.view(batch, n_chunks, chunk, dim)
    pos = torch.arange(chunk, device=k.device, dtype=k.dtype)

    # 1. Each chunk's own contribution to the state at its last step: sum_i e^{(C-1-i)w + k_i} (v_i, 1).
    q = kc + (chunk - 1 - pos)[:, None] * w  # [B, N, C, d]
    q_max = q.max(dim=2).values.detach()  # stabiliser only: the value does not depend on it
    eq = torch.exp(q - q_max[:, :, None])
    g_num, g_den = (eq * vc).sum(dim=2), eq.sum(dim=2)

    # 2. State before each chunk, H_n = e^{Cw} H_{n-1} + G_{n-1}, H_0 = given state: a Hillis-Steele prefix
    #    scan over the N+1 items [H_0, G_0, ..., G_{N-1}] (log-depth, every level vectorised over chunks).
    s_num = torch.cat([num0[:, None], g_num], dim=1)
    s_den = torch.cat([den0[:, None], g_den], dim=1)
    s_exp = torch.cat([exp0[:, None], q_max], dim=1)
    offset = 1
    while offset < n_chunks + 1:  # depends on the length only, never on data
        shifted_exp = s_exp[:, :-offset] + (offset * chunk) * w
        head_n, head_d, head_e = s_num[:, :offset], s_den[:, :offset], s_exp[:, :offset]
        tail_n, tail_d, tail_e = _logaddexp_scaled(s_num[:, :-offset], s_den[:, :-offset], shifted_exp,
                                                   s_num[:, offset:], s_den[:, offset:], s_exp[:, offset:])
        s_num = torch.cat([head_n, tail_n], dim=1)
        s_den = torch.cat([head_d, tail_d], dim=1)
        s_exp = torch.cat([head_e, tail_e], dim=1)
        offset *= 2
    h_num, h_den, h_exp = s_num[:, :-1], s_den[:, :-1], s_exp[:, :-1]  # state before chunk n, [B, N, d]

    # 3. Outputs in closed form inside each chunk. For step j of a chunk the terms are
    #    carried state: e^{h_exp + j w} (h_num, h_den); earlier steps i < j: e^{(j-1-i)w + k_i} (v_i, 1);
    #    the step itself: e^{u + k_j} (v_j, 1). One exponent table [B, N, C(j), C(i), d] per chunk.
    table = (pos[:, None] - 1 - pos[None, :])[..., None] * w  # (j-1-i) w, [C, C, d]
    diag = torch.eye(chunk, dtype=torch.bool, device=k.device)[..., None]
    table = torch.where(diag, u, table)  # the step itself: u instead of a decay
    upper = torch.ones(chunk, chunk, dtype=torch.bool, device=k.device).triu(1)[..., None]
    table = table.masked_fill(upper, float("-inf"))  # later steps: no term
    carry_exp = h_exp[:, :, None] + pos[:, None] * w  # [B, N, C, d]
    expo = kc[:, :, None] + table  # [B, N, C(j), C(i), d]
    with torch.no_grad():  # stabiliser only: the value does not depend on it
        m = torch.maximum(expo.max(dim=3).values, carry_exp)
    e_in = expo.sub_(m[:, :, :, None]).exp_()  # in place: the largest tensors of the layer
    e_carry = torch.exp(carry_exp - m)
    num = (e_in * vc[:, :, None]).sum(dim=3) + e_carry * h_num[:, :, None]
    den = e_in.sum(dim=3) + e_carry * h_den[:, :, None]
    out = (num / den).reshape(batch, n_chunks * chunk, dim)[:, pad:]
    return out, s_num[:, -1], s_den[:, -1], s_exp[:, -1]


def wkv_step(w: Tensor, u: Tensor, k: Tensor, v: Tensor, num: Tensor, den: Tensor, max_exp: Tensor):
    """One recurrent WKV step ([B, d] each). Returns (wkv, num, den, max_exp) after the step."""
    out_num, out_den, _ = _logaddexp_scaled(num, den, max_exp, v, torch.ones_like(v), u + k)
    new_num, new_den, new_exp = _logaddexp_scaled(num, den, max_exp + w, v, torch.ones_like(v), k)
    return out_num / out_den, new_num, new_den, new_exp


class TimeMix(nn.Module):
    """One RWKV-4 TimeMix block with pre-LayerNorm and residual."""

    def __init__(self, dim: int, layer: int = 0, n_layers: int = 1):
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)
        # RWKV-4's initial spread: decays from slow to fast across channels (faster in deeper layers), a
        # bonus around log(0.3), token-shift mixes ramping over channels.
        depth = layer / max(1, n_layers - 1)
        ramp = torch.arange(dim, dtype=torch.float32) / max(1, dim - 1)
        self.time_decay = nn.Parameter(-5.0 + 8.0 * ramp ** (0.7 + 1.3 * depth))
        zigzag = 0.5 * (((torch.arange(dim) + 1) % 3).float() - 1.0)
        self.time_first = nn.Parameter(torch.full((dim,), math.log(0.3)) + zigzag)
        shift_ramp = torch.arange(dim, dtype=torch.float32) / dim
        keep = 1.0 - depth
        self.mix_k = nn.Parameter(shift_ramp ** keep)
        self.mix_v = nn.Parameter(shift_ramp ** keep + 0.3 * depth)
        self.mix_r = nn.Parameter(shift_ramp ** (0.5 * keep))

    def decay(self) -> Tensor:
        """Log-decay per step, w = -exp(time_decay) < 0."""
        return -torch.exp(self.time_decay)

    def _kvr(self, xx: Tensor, x_prev: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        k = self.key(x_prev + self.mix_k * (xx - x_prev))
        v = self.value(x_prev + self.mix_v * (xx - x_prev))
        r = self.receptance(x_prev + self.mix_r * (xx - x_prev))
        return k, v, r

    def forward_chunk(self, x: Tensor, state: Tensor, chunk: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
        """Parallel form. x [B, T, d], state [4, B, d] (STATE_ROWS) -> (x + out [B, T, d], state after T)."""
        xx = self.norm(x)
        x_prev = torch.cat([_as(state[PREV_X], xx.dtype)[:, None], xx[:, :-1]], dim=1)
        k, v, r = self._kvr(xx, x_prev)
        f32 = _wkv_dtype(x.dtype)
        wkv, num, den, max_exp = wkv_parallel(
            _as(self.decay(), f32), _as(self.time_first, f32), _as(k, f32), _as(v, f32),
            _as(state[NUM], f32), _as(state[DEN], f32), _as(state[MAX_EXP], f32), chunk=chunk)
        out = self.output(torch.sigmoid(r) * _as(wkv, x.dtype))
        new_state = torch.stack([_as(xx[:, -1], state.dtype), _as(num, state.dtype), _as(den, state.dtype),
                                 _as(max_exp, state.dtype)])
        return x + out, new_state

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """Recurrent form. x_t [B, d], state [4, B, d] -> (x_t + out [B, d], new state)."""
        xx = self.norm(x_t)
        k, v, r = self._kvr(xx, _as(state[PREV_X], xx.dtype))
        f32 = _wkv_dtype(x_t.dtype)
        wkv, num, den, max_exp = wkv_step(
            _as(self.decay(), f32), _as(self.time_first, f32), _as(k, f32), _as(v, f32),
            _as(state[NUM], f32), _as(state[DEN], f32), _as(state[MAX_EXP], f32))
        out = self.output(torch.sigmoid(r) * _as(wkv, x_t.dtype))
        new_state = torch.stack([_as(xx, state.dtype), _as(num, state.dtype), _as(den, state.dtype),
                                 _as(max_exp, state.dtype)])
        return x_t + out, new_state


class EnhancedRWKV(nn.Module):
    """n_blocks TimeMix blocks (no ChannelMix) and a final LayerNorm: [B, T, d] -> [B, T, d], causal."""

    def __init__(self, dim: int, n_blocks: int = RWKV_BLOCKS, chunk: int = DEFAULT_CHUNK):
        super().__init__()
        if dim < 1 or n_blocks < 1 or chunk < 1:
            raise EdgeVadError(f"EnhancedRWKV needs dim, n_blocks, chunk >= 1, got {dim}, {n_blocks}, {chunk}")
        self.dim = dim
        self.n_blocks = n_blocks
        self.chunk = chunk
        self.blocks = nn.ModuleList(TimeMix(dim, layer=i, n_layers=n_blocks) for i in range(n_blocks))
        self.norm = nn.LayerNorm(dim)

    def init_state(self, batch: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> Tensor:
        """The state before the first frame: zeros, with max_exp = EMPTY_EXP (empty sums). See STATE_LAYOUT."""
        if device is None:
            device = self.norm.weight.device
        state = torch.zeros(self.n_blocks, len(STATE_ROWS), batch, self.dim, dtype=dtype, device=device)
        state[:, MAX_EXP] = EMPTY_EXP
        return state

    def forward(self, x: Tensor) -> Tensor:
        """Parallel form from the initial state: [B, T, d] -> [B, T, d]."""
        return self.forward_chunk(x, self.init_state(x.shape[0], dtype=torch.float32, device=x.device))[0]

    def forward_chunk(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """Parallel form continuing from `state`: ([B, T, d], state) -> ([B, T, d], state after T steps).

        Equal to T calls of `step`, so a stream can be processed in blocks of frames as well as frame by frame.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim or x.shape[1] < 1:
            raise EdgeVadError(f"EnhancedRWKV expects [batch, time >= 1, {self.dim}], got {list(x.shape)}")
        new_states = []
        for i, block in enumerate(self.blocks):
            x, s = block.forward_chunk(x, state[i], chunk=self.chunk)
            new_states.append(s)
        return self.norm(x), torch.stack(new_states)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """Recurrent form, one frame: ([B, d], state) -> ([B, d], new state). Export-friendly (no data-dependent
        control flow)."""
        new_states = []
        for i, block in enumerate(self.blocks):
            x_t, s = block.step(x_t, state[i])
            new_states.append(s)
        return self.norm(x_t), torch.stack(new_states)
