"""Fig. 4 analog (paper Sec. V): time and FLOPs of the enhanced RWKV head against a Transformer encoder.

Both models have the fine head's width d (FINE_HEAD_WIDTH) and the same number of layers L (RWKV_BLOCKS), batch 1,
sequence length T:
- RWKV: our `edge_vad_models.rwkv.EnhancedRWKV` (L TimeMix blocks, no ChannelMix, final LayerNorm), timed in
  both of its forms: parallel (`forward`, the whole sequence at once) and recurrent (`step`, T single-frame steps
  in a Python loop, what the device runs as frames arrive; in eager PyTorch it pays the per-step dispatch
  overhead). `rwkv_ms` is the PARALLEL form: like the Transformer it processes the whole sequence in one call,
  so the two compare like for like; `rwkv_recurrent_ms` is in every row too.
- Transformer: `torch.nn.TransformerEncoder` of L post-norm `TransformerEncoderLayer`s (d_model d, d // 64 heads,
  feed-forward 4d, ReLU, no dropout) plus a final LayerNorm, causal mask; timed as PyTorch runs it in inference
  mode (its fused fast path where PyTorch takes it).

FLOPs (analytic, batch 1, by the rule of edge_vad_export.budgets: 2 x multiply-accumulates of matrix products,
elementwise and normalisation ops not counted):
    RWKV:        F_rwkv(T) = L * T * 4 * d^2 * 2           (per step and block: key, value, receptance, output
                                                             projections; the WKV recurrence is elementwise, O(T d))
    Transformer: F_tf(T)   = L * (T * (4 + 2 * 4) * d^2 + 2 * T^2 * d) * 2
                              (Q, K, V and output projections 4 T d^2, feed-forward 2 * T * d * 4d, attention
                               scores Q K^T and weighted sum A V, T^2 d each, counted dense: a causal mask
                               zeroes half of them but the dense kernels compute them all)
so RWKV is linear in T and the Transformer's attention term quadratic. tests/profiling check both formulas
against torch.utils.flop_counter.FlopCounterMode.

Timing: `warmup` untimed calls, then the median of `repeats` timed calls, under torch.inference_mode, with
torch.cuda.synchronize() on CUDA. Threads are the caller's choice (torch.set_num_threads).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from edge_vad.constants import FIG4_LENGTHS, FINE_HIDDEN_DIM, RWKV_BLOCKS
from edge_vad.errors import EdgeVadError
from edge_vad_models.profiling.timing import summary, time_ms
from edge_vad_models.rwkv import EnhancedRWKV

FINE_HEAD_WIDTH = FINE_HIDDEN_DIM  # the fine head's width (edge_vad.constants: no numpy needed on a bare GPU box)
FFN_MULT = 4  # the standard Transformer feed-forward width, 4 d
HEAD_WIDTH = 64  # attention head width of the comparison Transformer (CLIP's and BERT's)
ROW_KEYS = ("length", "rwkv_ms", "rwkv_parallel_ms", "rwkv_recurrent_ms", "transformer_ms", "rwkv_gflops",
            "transformer_gflops", "speedup", "speedup_recurrent", "flops_ratio", "rwkv_form")


def rwkv_flops(length: int, width: int = FINE_HEAD_WIDTH, n_blocks: int = RWKV_BLOCKS) -> int:
    """F_rwkv(T) of the module doc: 2 * L * T * 4 d^2."""
    return 2 * n_blocks * length * 4 * width * width


def transformer_attention_flops(length: int, width: int = FINE_HEAD_WIDTH, n_layers: int = RWKV_BLOCKS) -> int:
    """The quadratic part of F_tf(T): scores and weighted sum, 2 * L * 2 T^2 d."""
    return 2 * n_layers * 2 * length * length * width


def transformer_flops(length: int, width: int = FINE_HEAD_WIDTH, n_layers: int = RWKV_BLOCKS,
                      ffn_mult: int = FFN_MULT) -> int:
    """F_tf(T) of the module doc: projections and feed-forward (linear in T) plus attention (quadratic)."""
    linear = 2 * n_layers * length * (4 + 2 * ffn_mult) * width * width
    return linear + transformer_attention_flops(length, width, n_layers)


def build_transformer(width: int = FINE_HEAD_WIDTH, n_layers: int = RWKV_BLOCKS,
                      ffn_mult: int = FFN_MULT) -> nn.TransformerEncoder:
    """The comparison model: n_layers standard encoder layers (d // 64 heads, 4d feed-forward) + final LayerNorm."""
    if width % HEAD_WIDTH and width > HEAD_WIDTH:
        raise EdgeVadError(f"Transformer width {width} is not a multiple of the head width {HEAD_WIDTH}")
    heads = max(1, width // HEAD_WIDTH)
    layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=ffn_mult * width, dropout=0.0,
                                       batch_first=True)
    # enable_nested_tensor only matters with padding masks (none here); off, it does not warn.
    return nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)


def causal_mask(length: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """Additive [T, T] mask: -inf above the diagonal (step t sees steps <= t), as the RWKV is causal."""
    return nn.Transformer.generate_square_subsequent_mask(length, device=torch.device(device))


def rwkv_recurrent(model: EnhancedRWKV, x: torch.Tensor) -> torch.Tensor:
    """The recurrent form over a whole sequence: one `step` per frame, state carried. [1, T, d] -> [1, T, d]."""
    state = model.init_state(x.shape[0], device=x.device)
    outputs = []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        outputs.append(y)
    return torch.stack(outputs, dim=1)


def _log(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def rwkv_vs_transformer(lengths: Sequence[int] = FIG4_LENGTHS, width: int = FINE_HEAD_WIDTH,
                        n_blocks: int = RWKV_BLOCKS, device: str = "cpu", repeats: int = 5, warmup: int = 1,
                        recurrent_repeats: int | None = None, progress: bool = True, seed: int = 0) -> list[dict]:
    """One row per length: {length, rwkv_ms (= rwkv_parallel_ms), rwkv_parallel_ms, rwkv_recurrent_ms,
    transformer_ms, rwkv_gflops, transformer_gflops, speedup (transformer_ms / rwkv_ms), speedup_recurrent,
    flops_ratio, rwkv_form}. Times are medians in ms; GFLOPs analytic (module doc). Random weights, batch 1.

    recurrent_repeats: timed calls of the recurrent form (default: min(repeats, 3)); in eager PyTorch it is by far
    the slowest (about 1-2 ms per step on a CPU core), and its per-call spread is small.
    """
    if not lengths or any(int(n) < 1 for n in lengths):
        raise EdgeVadError(f"sequence lengths must be >= 1, got {list(lengths)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EdgeVadError("device cuda was asked for but torch sees no CUDA device; use device='cpu'")
    torch.manual_seed(seed)
    rwkv = EnhancedRWKV(width, n_blocks=n_blocks).to(dev).eval()
    transformer = build_transformer(width, n_blocks).to(dev).eval()
    rec_repeats = recurrent_repeats or min(repeats, 3)
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for length in (int(n) for n in lengths):
            x = torch.randn(1, length, width, device=dev)
            mask = causal_mask(length, dev)
            parallel = summary(time_ms(lambda: rwkv(x), repeats, warmup, dev))
            recurrent = summary(time_ms(lambda: rwkv_recurrent(rwkv, x), rec_repeats, warmup, dev))
            tf = summary(time_ms(lambda: transformer(x, mask=mask, is_causal=True), repeats, warmup, dev))
            f_rwkv, f_tf = rwkv_flops(length, width, n_blocks), transformer_flops(length, width, n_blocks)
            row = {
                "length": length,
                "rwkv_ms": parallel["median_ms"],
                "rwkv_parallel_ms": parallel["median_ms"],
                "rwkv_recurrent_ms": recurrent["median_ms"],
                "transformer_ms": tf["median_ms"],
                "rwkv_gflops": round(f_rwkv / 1e9, 4),
                "transformer_gflops": round(f_tf / 1e9, 4),
                "speedup": round(tf["median_ms"] / parallel["median_ms"], 3),
                "speedup_recurrent": round(tf["median_ms"] / recurrent["median_ms"], 3),
                "flops_ratio": round(f_tf / f_rwkv, 3),
                "rwkv_form": "parallel",
            }
            rows.append(row)
            _log(f"[fig4] T={length}: RWKV parallel {row['rwkv_parallel_ms']:.2f} ms, recurrent "
                 f"{row['rwkv_recurrent_ms']:.2f} ms, Transformer {row['transformer_ms']:.2f} ms "
                 f"(x{row['speedup']:.2f}); GFLOPs {row['rwkv_gflops']:.2f} vs {row['transformer_gflops']:.2f}",
                 progress)
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a GitHub markdown table (times in ms, medians; GFLOPs analytic)."""
    lines = ["| T | RWKV parallel ms | RWKV recurrent ms | Transformer ms | speedup (parallel) | "
             "speedup (recurrent) | RWKV GFLOPs | Transformer GFLOPs | FLOPs ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['length']} | {r['rwkv_parallel_ms']:.2f} | {r['rwkv_recurrent_ms']:.2f} | "
                     f"{r['transformer_ms']:.2f} | {r['speedup']:.2f}x | {r['speedup_recurrent']:.2f}x | "
                     f"{r['rwkv_gflops']:.3f} | {r['transformer_gflops']:.3f} | {r['flops_ratio']:.2f}x |")
    return "\n".join(lines) + "\n"


def write_fig4(rows: Sequence[dict], out_png: str | Path, title: str | None = None) -> Path:
    """Two panels against T: time (RWKV parallel, RWKV recurrent, Transformer) and GFLOPs. Returns the path."""
    if not rows:
        raise EdgeVadError("no rows to plot; run rwkv_vs_transformer first")
    # Figure + Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    xs = [r["length"] for r in rows]
    fig = Figure(figsize=(10, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax_t, ax_f = fig.subplots(1, 2)
    ax_t.plot(xs, [r["rwkv_parallel_ms"] for r in rows], "o-", label="enhanced RWKV (parallel)")
    ax_t.plot(xs, [r["rwkv_recurrent_ms"] for r in rows], "s--", label="enhanced RWKV (recurrent steps)")
    ax_t.plot(xs, [r["transformer_ms"] for r in rows], "^-", label="Transformer encoder")
    ax_t.set(xlabel="sequence length T", ylabel="time (ms, median)", title="inference time")
    ax_f.plot(xs, [r["rwkv_gflops"] for r in rows], "o-", label="enhanced RWKV")
    ax_f.plot(xs, [r["transformer_gflops"] for r in rows], "^-", label="Transformer encoder")
    ax_f.set(xlabel="sequence length T", ylabel="GFLOPs (2 x MACs)", title="computation")
    for ax in (ax_t, ax_f):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "Fig. 4 analog: enhanced RWKV vs Transformer encoder (same width and depth)")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def fine_stage_budget(encoder: str = "clip-vit-b16", **kwargs: Any) -> dict:
    """Parameters and GFLOPs per snippet pass of the fine stage; see edge_vad_models.profiling.fine_budget.

    Here too because `edge-vad bench` reads both figures from this module; imported lazily (numpy, prompts)."""
    from edge_vad_models.profiling.fine_budget import fine_stage_budget as budget

    return budget(encoder=encoder, **kwargs)
