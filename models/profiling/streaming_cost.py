"""Per-frame cost of a STREAMING step as history grows: what the fine head pays on a device for each new frame.

sequence_cost compares whole sequences (bounded on a CPU by the FLOP ratio); a camera delivers one frame at a
time, so what matters on the device is the cost of taking ONE more frame after `length` frames of history:
- RWKV (`rwkv_step_ms`): one recurrent `step` from the state reached after `length` frames (the state is
  [blocks, 4, 1, d] whatever the length: constant time and memory per stream);
- Transformer, window re-encoded (`transformer_window_ms`): the encoder over the last `length` frames again
  (causal mask), which is what a Transformer without a cache does for every frame;
- Transformer with a KV cache (`transformer_kv_ms`): the new frame's queries against the cached keys and values
  of the `length` frames before it, per layer (KVCachedEncoder, exact for a causal post-norm encoder: a past
  frame's per-layer inputs never change, so neither do its keys and values); linear in `length`.
Both Transformers are sequence_cost.build_transformer (same width and depth as the RWKV head).

Memory per stream (float32 bytes): RWKV state; the window of `length` input features a re-encoding Transformer
keeps; the KV cache (2 x layers x length x d).

Timing is interleaved: the states, windows and caches of every length are built first, then each round times
one call per length in turn, so a machine whose load changes during the sweep moves every length alike. The
figure is the median over rounds. Threads are the caller's (torch.set_num_threads).
"""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edge_vad.constants import FIG4_LENGTHS, RWKV_BLOCKS
from edge_vad.errors import EdgeVadError
from edge_vad_models.profiling.sequence_cost import FINE_HEAD_WIDTH, build_transformer, causal_mask
from edge_vad_models.profiling.timing import synchronize
from edge_vad_models.rwkv import EnhancedRWKV

FLOAT32_BYTES = 4
ROW_KEYS = ("length", "rwkv_step_ms", "transformer_window_ms", "transformer_kv_ms", "rwkv_state_bytes",
            "transformer_window_bytes", "transformer_kv_bytes")


class KVCachedEncoder:
    """One new frame through a causal post-norm nn.TransformerEncoder, with per-layer key/value caches.

        enc = KVCachedEncoder(transformer, max_length=1750)
        y_t = enc.step(x_t)          # [1, d] -> [1, d]: equals transformer(x[:, :t+1], causal)[:, t]
        enc.truncate(n)              # forget everything after the first n frames
    """

    def __init__(self, encoder: nn.TransformerEncoder, max_length: int):
        layer = encoder.layers[0]
        if layer.norm_first or not layer.self_attn.batch_first:
            raise EdgeVadError("KVCachedEncoder handles post-norm, batch-first encoder layers only")
        self.encoder = encoder
        self.heads = layer.self_attn.num_heads
        self.width = layer.self_attn.embed_dim
        self.head_dim = self.width // self.heads
        n = len(encoder.layers)
        self.keys = torch.zeros(n, self.heads, max_length, self.head_dim)
        self.values = torch.zeros_like(self.keys)
        self.length = 0

    def truncate(self, length: int) -> None:
        self.length = length

    def fill(self, x: Tensor) -> None:
        """Cache the keys and values of a whole [1, T, d] history at once (one causal pass, layer by layer)."""
        t = x.shape[1]
        if t > self.keys.shape[2]:
            raise EdgeVadError(f"{t} frames do not fit a KV cache of {self.keys.shape[2]}")
        mask = causal_mask(t, x.device)
        for i, layer in enumerate(self.encoder.layers):
            _, k, v = F.linear(x[0], layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias).chunk(3, dim=-1)
            self.keys[i, :, :t] = k.view(t, self.heads, self.head_dim).transpose(0, 1)
            self.values[i, :, :t] = v.view(t, self.heads, self.head_dim).transpose(0, 1)
            x = layer(x, src_mask=mask, is_causal=True)
        self.length = t

    def step(self, x: Tensor) -> Tensor:
        t = self.length
        if t >= self.keys.shape[2]:
            raise EdgeVadError(f"KV cache full ({t} frames); build it with a larger max_length")
        for i, layer in enumerate(self.encoder.layers):
            attn = layer.self_attn
            q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)  # [1, d] each
            self.keys[i, :, t] = k.view(self.heads, self.head_dim)
            self.values[i, :, t] = v.view(self.heads, self.head_dim)
            qh = q.view(self.heads, 1, self.head_dim)
            a = F.scaled_dot_product_attention(qh, self.keys[i, :, :t + 1], self.values[i, :, :t + 1])  # [h, 1, hd]
            h = layer.norm1(x + attn.out_proj(a.reshape(1, self.width)))
            x = layer.norm2(h + layer.linear2(layer.activation(layer.linear1(h))))
        self.length = t + 1
        return self.encoder.norm(x) if self.encoder.norm is not None else x


def _interleaved_ms(calls: Sequence, rounds: int, device: torch.device) -> list[float]:
    """Median ms per call of each callable, timing one call of each per round, in turn."""
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for i, call in enumerate(calls):
            synchronize(device)
            t0 = time.perf_counter()
            call()
            synchronize(device)
            samples[i].append((time.perf_counter() - t0) * 1e3)
    return [round(statistics.median(s), 4) for s in samples]


def streaming_rows(lengths: Sequence[int] = FIG4_LENGTHS, width: int = FINE_HEAD_WIDTH, n_blocks: int = RWKV_BLOCKS,
                   device: str = "cpu", rounds: int = 200, window_rounds: int = 5, seed: int = 0) -> list[dict]:
    """One row per history length (keys ROW_KEYS): ms per new frame and bytes per stream; see the module doc.
    `rounds` timed calls per length for the steps, `window_rounds` for the (much slower) window re-encoding."""
    lengths = [int(n) for n in lengths]
    if not lengths or min(lengths) < 1 or rounds < 1 or window_rounds < 1:
        raise EdgeVadError(f"need lengths >= 1 and rounds >= 1, got {lengths}, {rounds}, {window_rounds}")
    dev = torch.device(device)
    torch.manual_seed(seed)
    rwkv = EnhancedRWKV(width, n_blocks=n_blocks).to(dev).eval()
    transformer = build_transformer(width, n_blocks).to(dev).eval()
    longest = max(lengths)
    stream = torch.randn(1, longest + 1, width, device=dev)
    with torch.inference_mode():
        # RWKV states after each length (the parallel form equals `length` steps), then one step from each
        states = {n: rwkv.forward_chunk(stream[:, :n], rwkv.init_state(1, device=dev))[1] for n in lengths}
        x_new = {n: stream[:, n] for n in lengths}
        rwkv_ms = _interleaved_ms([lambda n=n: rwkv.step(x_new[n], states[n]) for n in lengths], rounds, dev)
        # a re-encoding Transformer: its whole window again for every new frame
        masks = {n: causal_mask(n, dev) for n in lengths}
        windows = {n: stream[:, 1:n + 1] for n in lengths}  # the last n frames once frame n has arrived
        window_ms = _interleaved_ms([lambda n=n: transformer(windows[n], mask=masks[n], is_causal=True)
                                     for n in lengths], window_rounds, dev)
        # a KV-cached Transformer: the history of length n is the first n frames of one cache, so each timed
        # step truncates it to n and then writes frame n where it already was
        cache = KVCachedEncoder(transformer, longest + 1)
        cache.fill(stream[:, :longest])

        def kv_step(n: int) -> None:
            cache.truncate(n)
            cache.step(x_new[n])

        kv_ms = _interleaved_ms([lambda n=n: kv_step(n) for n in lengths], rounds, dev)
    state_bytes = int(states[lengths[0]].numel()) * FLOAT32_BYTES
    return [{"length": n, "rwkv_step_ms": r, "transformer_window_ms": w, "transformer_kv_ms": k,
             "rwkv_state_bytes": state_bytes, "transformer_window_bytes": n * width * FLOAT32_BYTES,
             "transformer_kv_bytes": 2 * n_blocks * n * width * FLOAT32_BYTES}
            for n, r, w, k in zip(lengths, rwkv_ms, window_ms, kv_ms)]
