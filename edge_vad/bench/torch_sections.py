"""The sections that need PyTorch (the `train` extra), run only where `import torch` works.

- rwkv_vs_transformer: the paper's Fig. 4 analog, time and FLOPs of the enhanced RWKV head against a Transformer
  encoder of the same width over sequence lengths (edge_vad_models.profiling.sequence_cost; its rows' rwkv_ms is
  the parallel form, rwkv_recurrent_ms, where present, the frame-by-frame form); and under `streaming` what a
  device pays per NEW frame as history grows (edge_vad_models.profiling.streaming_cost): one RWKV step against a
  Transformer re-encoding its window and one with a KV cache, with memory per stream.
- fine_reference_budget: parameters and GFLOPs of the paper-faithful fine stage (CLIP ViT-B/16 tower + RWKV head)
  on the architecture with random weights (same module), held to the target's budgets.
- fine_torch_latency: latency of that fine encoder (ViT-B/16 image tower) and fine head (projection + two
  RWKV TimeMix steps + projection, one frame) in PyTorch on --device (cpu or cuda), random weights, labelled.

Each returns a dict; when torch (or the profiling module) is missing the dict says `skipped` and why, and the
rest of bench carries on. torch is imported inside the functions only: the runtime never imports it.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from edge_vad.bench.timing import summarise, time_calls, timed_once
from edge_vad.constants import CLIP_EMBED_DIM, CLIP_FRAMES_PER_SNIPPET, FIG4_LENGTHS, FINE_HIDDEN_DIM, SNIPPET_FRAMES

log = logging.getLogger("edge_vad.bench")

PROFILING_MODULE = "edge_vad_models.profiling.sequence_cost"
STREAMING_MODULE = "edge_vad_models.profiling.streaming_cost"
# Steps take ~1 ms (RWKV) and ~5 ms (KV): 200 rounds cost ~10 s and steady the medians on a shared machine; the
# window re-encoding takes ~1-2 s at 1750 on a CPU, so 3 rounds of it.
STREAMING_CPU_OPTIONS = {"rounds": 200, "window_rounds": 3}
STREAMING_ROW_KEYS = ("length", "rwkv_step_ms", "transformer_window_ms", "transformer_kv_ms")
TORCH_CPU_ITERATIONS = 5  # ViT-B/16 (17.6 GFLOPs) takes 0.3-3 s per frame on one shared CPU core: few calls, labelled
TORCH_CPU_THREADS = 1  # the same one core as the runtime's latency figures
# On a CPU: no warm-up, 3 timed calls per form and length, 1 of the frame-by-frame form (10-30 s per sequence
# at T = 1750 on one shared core; 5 repeats made the sweep take over 15 minutes here).
SWEEP_CPU_OPTIONS = {"repeats": 3, "recurrent_repeats": 1, "warmup": 0}
ROW_KEYS = ("length", "rwkv_ms", "transformer_ms", "rwkv_gflops", "transformer_gflops")


def torch_status() -> Tuple[bool, str]:
    """(usable, why not). Imports torch only to prove it imports."""
    if importlib.util.find_spec("torch") is None:
        return False, "torch is not installed (it comes with the `train` extra); the PyTorch sections were skipped"
    try:
        importlib.import_module("torch")
    except Exception as exc:  # noqa: BLE001 - a broken install is a reason to skip, with the reason
        return False, f"import torch failed ({type(exc).__name__}: {exc}); the PyTorch sections were skipped"
    return True, ""


def _profiling(module: str = PROFILING_MODULE) -> Tuple[Optional[Any], str]:
    ok, why = torch_status()
    if not ok:
        return None, why
    try:
        return importlib.import_module(module), ""
    except ImportError as exc:
        return None, f"{module} is not available ({exc}); the section was skipped"


def _fit_linear(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """R^2 of a least-squares line through (x, y): 1.0 = exactly linear in the length."""
    import numpy as np

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if xa.size < 3 or not np.all(np.isfinite(ya)):
        return None
    slope, icpt = np.polyfit(xa, ya, 1)
    resid = ya - (slope * xa + icpt)
    total = float(((ya - ya.mean()) ** 2).sum())
    return round(1.0 - float((resid ** 2).sum()) / total, 4) if total > 0 else None


@contextmanager
def cpu_threads(device: str) -> Iterator[None]:
    """torch on TORCH_CPU_THREADS intra-op threads while on the CPU (restored after); a no-op without torch."""
    torch = sys.modules.get("torch")
    if device != "cpu" or torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(TORCH_CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sweep_options(fn: Any, device: str) -> Dict[str, Any]:
    """Fewer timed calls on a CPU, where the frame-by-frame RWKV form takes seconds per sequence; passed only
    where the profiling function accepts them."""
    import inspect

    accepted = inspect.signature(fn).parameters
    wanted = dict(SWEEP_CPU_OPTIONS) if device == "cpu" else {}
    wanted["progress"] = False
    return {k: v for k, v in wanted.items() if k in accepted}


def rwkv_vs_transformer(device: str, skip: bool, lengths: Sequence[int] = FIG4_LENGTHS) -> Dict[str, Any]:
    """{rows, device, ratio_at_max, rwkv_time_linearity_r2, ...} or {rows: [], skipped: why}."""
    if skip:
        return {"rows": [], "skipped": "--skip-rwkv was given"}
    mod, why = _profiling()
    if mod is None:
        return {"rows": [], "skipped": why}
    kwargs = _sweep_options(mod.rwkv_vs_transformer, device)
    with cpu_threads(device):
        rows: List[Dict[str, Any]] = [dict(r) for r in mod.rwkv_vs_transformer(lengths=tuple(lengths), device=device,
                                                                                **kwargs)]
    missing = [k for k in ROW_KEYS if rows and k not in rows[0]]
    if missing:
        return {"rows": rows, "skipped": None, "error": f"rows lack keys {missing}"}
    last = max(rows, key=lambda r: r["length"]) if rows else None
    out: Dict[str, Any] = {"rows": rows, "skipped": None, "device": device, "lengths": list(lengths),
                           "options": kwargs, "threads": TORCH_CPU_THREADS if device == "cpu" else None}
    if last is not None and last["rwkv_ms"]:
        out["max_length"] = last["length"]
        out["speedup_at_max_length"] = round(last["transformer_ms"] / last["rwkv_ms"], 3)
        out["flops_ratio_at_max_length"] = (round(last["transformer_gflops"] / last["rwkv_gflops"], 3)
                                            if last["rwkv_gflops"] else None)
        if last.get("rwkv_recurrent_ms"):  # the step-by-step form, as the device runs it
            out["speedup_recurrent_at_max_length"] = round(last["transformer_ms"] / last["rwkv_recurrent_ms"], 3)
    xs = [r["length"] for r in rows]
    out["rwkv_time_linearity_r2"] = _fit_linear(xs, [r["rwkv_ms"] for r in rows])
    out["rwkv_flops_linearity_r2"] = _fit_linear(xs, [r["rwkv_gflops"] for r in rows])
    out["streaming"] = streaming(device, lengths)
    return out


def streaming(device: str, lengths: Sequence[int] = FIG4_LENGTHS) -> Dict[str, Any]:
    """{rows, rwkv_step_growth, ...}: per-frame cost of a streaming step at each history length (module doc)."""
    mod, why = _profiling(STREAMING_MODULE)
    if mod is None:
        return {"rows": [], "skipped": why}
    options = dict(STREAMING_CPU_OPTIONS) if device == "cpu" else {}
    with cpu_threads(device):
        rows = [dict(r) for r in mod.streaming_rows(lengths=tuple(lengths), device=device, **options)]
    missing = [k for k in STREAMING_ROW_KEYS if rows and k not in rows[0]]
    if missing or not rows:
        return {"rows": rows, "skipped": None, "error": f"rows lack keys {missing}" if rows else "no rows"}
    first, last = min(rows, key=lambda r: r["length"]), max(rows, key=lambda r: r["length"])

    def growth(key: str) -> Optional[float]:
        return round(last[key] / first[key], 3) if first[key] else None

    return {"rows": rows, "skipped": None, "device": device, "options": options,
            "threads": TORCH_CPU_THREADS if device == "cpu" else None,
            "rwkv_step_growth": growth("rwkv_step_ms"), "transformer_window_growth": growth("transformer_window_ms"),
            "transformer_kv_growth": growth("transformer_kv_ms"),
            "how": (f"ms per NEW frame after `length` frames of history (median over interleaved rounds), fine-head "
                    f"width, random weights, PyTorch eager: one RWKV recurrent step; the Transformer re-encoding its "
                    f"last `length` frames; the Transformer with a KV cache of `length` frames. *_growth = cost at "
                    f"{last['length']} / cost at {first['length']}. Memory per stream in bytes (float32): RWKV "
                    f"state, the re-encoded window's input features, the KV cache")}


def fine_reference_budget(encoder: str = "clip-vit-b16") -> Dict[str, Any]:
    mod, why = _profiling()
    if mod is None:
        return {"skipped": why}
    # Frames the encoder runs per snippet are what the exporter declares for that encoder (the runtime's rate).
    frames = CLIP_FRAMES_PER_SNIPPET if encoder == "clip-vit-b16" else SNIPPET_FRAMES
    out = dict(mod.fine_stage_budget(encoder=encoder, frames_per_snippet=frames))
    out.setdefault("encoder", encoder)
    out["skipped"] = None
    return out


def fine_torch_latency(device: str, iterations: int, warmup: int) -> Dict[str, Any]:
    """Fine encoder (ViT-B/16 tower) and fine head latency in PyTorch on `device`, random weights."""
    ok, why = torch_status()
    if not ok:
        return {"skipped": why}
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return {"skipped": "--device cuda was given but torch sees no CUDA device"}
    if importlib.util.find_spec("edge_vad_models") is None:
        return {"skipped": "edge_vad_models (the train extra) is not installed"}
    n = iterations if device == "cuda" else min(iterations, TORCH_CPU_ITERATIONS)
    with cpu_threads(device):
        return _fine_torch_latency(device, n, iterations, warmup)


def _fine_torch_latency(device: str, n: int, iterations: int, warmup: int) -> Dict[str, Any]:
    import torch

    from edge_vad_models.fine.clip_vit_b16 import build_clip, import_open_clip
    from edge_vad_models.rwkv import EnhancedRWKV

    torch.manual_seed(0)
    cfg = import_open_clip().get_model_config("ViT-B-16")
    visual = build_clip(None, model_cfg=dict(cfg, quick_gelu=True)).visual.to(device).eval()
    head_in = torch.nn.Linear(CLIP_EMBED_DIM, FINE_HIDDEN_DIM).to(device)
    rwkv = EnhancedRWKV(FINE_HIDDEN_DIM).to(device).eval()
    head_out = torch.nn.Linear(FINE_HIDDEN_DIM, CLIP_EMBED_DIM).to(device)
    image = torch.randn(1, 3, 224, 224, device=device)
    feature = torch.randn(1, CLIP_EMBED_DIM, device=device)
    state = [rwkv.init_state(1, device=device)]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def encoder(_i: int) -> None:
        visual(image)
        sync()

    def head(_i: int) -> None:
        y, state[0] = rwkv.step(head_in(feature), state[0])
        torch.nn.functional.normalize(head_out(y), dim=-1)
        sync()

    out: Dict[str, Any] = {"skipped": None, "device": device, "weights": "random (architecture only)",
                           "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    with torch.inference_mode():
        for name, fn in (("fine_encoder", encoder), ("fine_head", head)):
            _, cold = timed_once(lambda: fn(0))
            entry = summarise(time_calls(fn, n, min(warmup, 1 if device == "cpu" else n)))
            entry["cold_ms"] = round(cold, 3)
            entry["backend"] = f"torch {device}"
            out[name] = entry
    out["note"] = (f"CLIP ViT-B/16 image tower at 224x224 and the fine head (linear {CLIP_EMBED_DIM}->{FINE_HIDDEN_DIM}, "
                   f"two RWKV TimeMix steps, linear, L2) on one frame; cold = first call after building "
                   f"(no file to load); {n} timed calls" + ("" if n == iterations else " (capped on the CPU)"))
    return out
