#!/usr/bin/env python3
"""Fine-stage latency on one GPU (or the CPU) in PyTorch, random weights: one short run, a table and a JSON.

Measures, on --device (default cuda):
  1. fine encoder: the CLIP ViT-B/16 image tower at 224x224, fp32 and fp16 autocast, batch 1 and batch 16
     (one snippet of SNIPPET_FRAMES frames);
  2. the EfficientNet-Lite0 trunk (the offline default's image side, shared with the coarse stage), same grid;
  3. the fine head: one recurrent step (linear 512->512, EnhancedRWKV.step, linear, L2, cosine against a 7-class
     text table) and one snippet through the parallel form;
  4. the RWKV vs Transformer sweep (edge_vad_models.profiling.sequence_cost, the paper's Fig. 4 analog).
Times are medians after warm-up, under torch.inference_mode, with torch.cuda.synchronize(). All weights are
random (cost only, labelled so). Writes DIR/gpu_fine_stage.json (card, torch and CUDA versions, the exact
command), DIR/gpu_fine_stage.md and, with matplotlib, DIR/fig4_<device>.png.

Needs only PyTorch and this checkout (no `pip install`): run from the repository root as
    python benchmarks/gpu_fine_stage.py --out "$OUT"        (default --out: benchmarks/results/gpu)
The script puts the checkout on sys.path and maps models/ to its import name edge_vad_models. Optional:
  - open_clip_torch (needs torchvision): else the ViT-B/16 tower is edge_vad_models.profiling.vit_tower's
    torch.nn twin (same parameters, FLOPs and operations; `fine_encoder.impl` in the JSON says which ran);
  - efficientnet_lite_pytorch (pure Python, 124 kB, needs only torch): else the Lite0 row is skipped with the
    reason. On a bare machine bring the folder along (e.g. carry .venv/lib/python3.11/site-packages/
    efficientnet_lite_pytorch) and run with PYTHONPATH=.venv/lib/python3.11/site-packages;
  - matplotlib: else no PNG (said in the JSON).
--quick (for tests): a 2-layer ViT, batches 1 and 2, one timed call, a short sweep; its numbers mean nothing.
Expected to take about a minute on a datacenter GPU, most of it the recurrent RWKV sweep (not yet measured there).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.util
import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


def _bootstrap_imports() -> str:
    """Make `edge_vad` and `edge_vad_models` importable from this checkout without installing it; says how."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if importlib.util.find_spec("edge_vad_models") is not None:
        return "installed package"
    spec = importlib.util.spec_from_file_location("edge_vad_models", REPO / "models" / "__init__.py",
                                                  submodule_search_locations=[str(REPO / "models")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["edge_vad_models"] = module
    spec.loader.exec_module(module)
    return "checkout (models/ mapped by this script)"


IMPORTED_VIA = _bootstrap_imports()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from edge_vad.constants import CLIP_EMBED_DIM, IMAGE_SIZE, SNIPPET_FRAMES, XD_VIOLENCE_CLASSES  # noqa: E402
from edge_vad_models.profiling import sequence_cost  # noqa: E402
from edge_vad_models.profiling.counting import count_flops, count_params  # noqa: E402
from edge_vad_models.profiling.timing import summary, time_ms  # noqa: E402
from edge_vad_models.profiling.vit_tower import open_clip_available, vit_b16_image_tower  # noqa: E402
from edge_vad_models.rwkv import EnhancedRWKV  # noqa: E402

WEIGHTS = "random (architecture only)"
QUICK_VIT_LAYERS = 2
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # autocast dtype (None: plain fp32)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu", help="output folder")
    p.add_argument("--quick", action="store_true", help="tiny run to test the script (numbers mean nothing)")
    p.add_argument("--vit-impl", choices=("auto", "open_clip", "torch"), default="auto")
    p.add_argument("--precisions", default=None, help="comma list of fp32, fp16, bf16 (default: fp32,fp16 on "
                   "cuda, fp32 on cpu)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 30 cuda, 5 cpu)")
    p.add_argument("--lengths", default=None, help="comma list of sweep lengths (default 250..1750 step 250)")
    p.add_argument("--skip-sweep", action="store_true", help="leave out the RWKV vs Transformer sweep")
    return p.parse_args(argv)


def _environment(device: torch.device, argv: list[str]) -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
        "command": shlex.join([Path(sys.executable).name, *argv]), "cwd": str(Path.cwd()),
        "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "weights": WEIGHTS,
        "edge_vad_models": f"{Path(sys.modules['edge_vad_models'].__file__).parent} ({IMPORTED_VIA})",
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=torch.cuda.get_device_name(device), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version(),
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32)
    return env


def _timed(fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device, dtype: torch.dtype | None) -> dict:
    def call() -> Any:
        if dtype is None:
            return fn()
        with torch.autocast(device_type=device.type, dtype=dtype):
            return fn()

    return summary(time_ms(call, repeats, warmup, device))


def _image_grid(name: str, model: nn.Module, impl: str, batches: list[int], precisions: list[str], repeats: int,
                warmup: int, device: torch.device) -> dict[str, Any]:
    model = model.to(device).eval()
    one = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    flops = count_flops(lambda: model(one), model)  # fp32, batch 1: FLOPs are linear in the batch
    out: dict[str, Any] = {"name": name, "impl": impl, "params": count_params(model),
                           "gflops_per_frame": round(flops / 1e9, 4), "runs": []}
    with torch.inference_mode():
        for precision in precisions:
            for batch in batches:
                x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
                stats = _timed(lambda: model(x), repeats, warmup, device, PRECISIONS[precision])
                out["runs"].append({"precision": precision if precision == "fp32" else f"{precision}-autocast",
                                    "batch": batch, **stats,
                                    "ms_per_frame": round(stats["median_ms"] / batch, 4),
                                    "frames_per_s": round(1e3 * batch / stats["median_ms"], 1)})
                print(f"  {name} {precision} batch {batch}: {stats['median_ms']:.2f} ms", file=sys.stderr, flush=True)
    return out


def _lite0_trunk() -> tuple[nn.Module | None, str]:
    """(trunk, impl) or (None, why it was skipped)."""
    try:
        from edge_vad_models.backbones import DEFAULT_BACKBONE, get_backbone_spec

        return get_backbone_spec(DEFAULT_BACKBONE).build(pretrained=False).trunk, "edge_vad_models.backbones"
    except ImportError as exc:
        first_error = f"{type(exc).__name__}: {exc}"
    # edge_vad_models.backbones also imports cv2 and numpy; the network itself needs only this pure-Python library.
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        return None, (f"skipped: edge_vad_models.backbones does not import ({first_error}) and "
                      "efficientnet_lite_pytorch is not installed (pip install efficientnet-lite-pytorch==0.1.0, or "
                      "put its folder on PYTHONPATH)")
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=IMAGE_SIZE)

    class Trunk(nn.Module):  # the same cut as edge_vad_models.backbones: features before pool / FC
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(x)

    return Trunk(), f"efficientnet_lite_pytorch direct ({first_error.split(':')[0]} on edge_vad_models.backbones)"


def _fine_head(repeats: int, warmup: int, device: torch.device) -> dict[str, Any]:
    """The clip-vit-b16 fine head of FineStage (hidden 512): per-frame recurrent step and per-snippet parallel."""
    hidden = sequence_cost.FINE_HEAD_WIDTH
    in_proj, out_proj = nn.Linear(CLIP_EMBED_DIM, hidden).to(device), nn.Linear(hidden, CLIP_EMBED_DIM).to(device)
    rwkv = EnhancedRWKV(hidden).to(device).eval()
    table = F.normalize(torch.randn(len(XD_VIOLENCE_CLASSES), CLIP_EMBED_DIM, device=device), dim=-1)
    feature = torch.randn(1, CLIP_EMBED_DIM, device=device)
    snippet = torch.randn(1, SNIPPET_FRAMES, CLIP_EMBED_DIM, device=device)
    state = [rwkv.init_state(1, device=device)]

    def step() -> torch.Tensor:
        y, state[0] = rwkv.step(in_proj(feature), state[0])
        return F.normalize(out_proj(y), dim=-1) @ table.T

    def whole_snippet() -> torch.Tensor:
        y = rwkv(in_proj(snippet))
        return F.normalize(out_proj(y), dim=-1) @ table.T

    modules = (in_proj, rwkv, out_proj)
    flops = {"step": count_flops(step, *modules), "snippet": count_flops(whole_snippet, *modules)}
    state[0] = rwkv.init_state(1, device=device)  # counting ran one step with autograd on: start clean
    with torch.inference_mode():
        return {"params": sum(count_params(m) for m in modules), "hidden_dim": hidden,
                "step": {**_timed(step, repeats, warmup, device, None), "gflops": round(flops["step"] / 1e9, 6)},
                "snippet_parallel": {**_timed(whole_snippet, repeats, warmup, device, None), "frames": SNIPPET_FRAMES,
                                     "gflops": round(flops["snippet"] / 1e9, 6)}}


def _markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    where = env.get("gpu") or f"CPU ({env['cpu_threads']} threads)"
    lines = [f"# Fine stage in PyTorch on {where}", "",
             f"torch {env['torch']}, CUDA {env['cuda']}; weights {WEIGHTS}; medians after warm-up.",
             f"Command: `{env['command']}`" + (" (QUICK: numbers mean nothing)" if result["quick"] else ""), "",
             "| part | impl | precision | batch | median ms | ms / frame | frames/s |",
             "|---|---|---|---:|---:|---:|---:|"]
    for key in ("fine_encoder", "lite0_trunk"):
        part = result[key]
        if "runs" not in part:
            lines.append(f"| {key} | {part.get('skipped', '')} | | | | | |")
            continue
        for r in part["runs"]:
            lines.append(f"| {part['name']} | {part['impl']} | {r['precision']} | {r['batch']} | "
                         f"{r['median_ms']:.3f} | {r['ms_per_frame']:.3f} | {r['frames_per_s']:.1f} |")
    head = result["fine_head"]
    lines.append(f"| fine head, one step | torch | fp32 | 1 | {head['step']['median_ms']:.3f} | "
                 f"{head['step']['median_ms']:.3f} | {1e3 / head['step']['median_ms']:.1f} |")
    snip = head["snippet_parallel"]
    lines.append(f"| fine head, one snippet (parallel) | torch | fp32 | 1 | {snip['median_ms']:.3f} | "
                 f"{snip['median_ms'] / snip['frames']:.3f} | {1e3 * snip['frames'] / snip['median_ms']:.1f} |")
    sweep = result.get("rwkv_vs_transformer") or {}
    if sweep.get("rows"):
        lines += ["", "## Enhanced RWKV vs Transformer encoder (Fig. 4 analog)", "",
                  sequence_cost.markdown_table(sweep["rows"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv if argv is None else [sys.argv[0], *argv])
    args = _parse(raw[1:])
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device {args.device} but torch {torch.__version__} sees no CUDA device "
              f"(torch.version.cuda = {torch.version.cuda}); install a CUDA build of PyTorch or pass --device cpu",
              file=sys.stderr)
        return 2
    precisions = (args.precisions.split(",") if args.precisions else
                  (["fp32", "fp16"] if device.type == "cuda" else ["fp32"]))
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        print(f"error: unknown precision(s) {unknown}; use {', '.join(PRECISIONS)}", file=sys.stderr)
        return 2
    repeats = args.repeats or (1 if args.quick else (30 if device.type == "cuda" else 5))
    warmup = 0 if args.quick else 3
    batches = [1, 2] if args.quick else [1, SNIPPET_FRAMES]
    lengths = ([int(n) for n in args.lengths.split(",")] if args.lengths else
               ([16, 32] if args.quick else list(sequence_cost.FIG4_LENGTHS)))
    torch.manual_seed(0)

    result: dict[str, Any] = {"environment": _environment(device, raw), "quick": args.quick,
                              "batches": batches, "precisions": precisions}
    print(f"[gpu_fine_stage] {result['environment'].get('gpu', 'cpu')}, torch {torch.__version__}", file=sys.stderr)

    vit_ok, vit_why = open_clip_available()
    # --quick keeps 2 of the 12 layers: it tests the script, not the network (and says so in the name).
    tower, impl = vit_b16_image_tower(args.vit_impl, config={"layers": QUICK_VIT_LAYERS} if args.quick else None)
    name = "CLIP ViT-B/16 image tower" + (f" (QUICK: {QUICK_VIT_LAYERS} of 12 layers)" if args.quick else "")
    result["fine_encoder"] = _image_grid(name, tower, impl, batches, precisions, repeats, warmup, device)
    if impl == "torch":
        result["fine_encoder"]["note"] = ("open_clip " + ("not asked for" if vit_ok else f"unavailable ({vit_why})") +
                                          "; torch.nn twin with open_clip's parameters and operations")
    del tower

    trunk, trunk_impl = _lite0_trunk()
    result["lite0_trunk"] = ({"skipped": trunk_impl} if trunk is None else
                             _image_grid("EfficientNet-Lite0 trunk", trunk, trunk_impl, batches, precisions, repeats,
                                         warmup, device))
    result["fine_head"] = _fine_head(max(repeats, 3 if args.quick else 100), warmup, device)

    if args.skip_sweep:
        result["rwkv_vs_transformer"] = {"skipped": "--skip-sweep"}
    else:
        rows = sequence_cost.rwkv_vs_transformer(lengths=lengths, device=str(device), repeats=repeats,
                                                 warmup=warmup and 1, recurrent_repeats=1 if args.quick else 2)
        result["rwkv_vs_transformer"] = {"rows": rows, "width": sequence_cost.FINE_HEAD_WIDTH,
                                         "rwkv_ms_is": "parallel form; rwkv_recurrent_ms = T single steps"}

    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "gpu_fine_stage.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = _markdown(result)
    (args.out / "gpu_fine_stage.md").write_text(md, encoding="utf-8")
    if result["rwkv_vs_transformer"].get("rows"):
        try:
            png = sequence_cost.write_fig4(result["rwkv_vs_transformer"]["rows"], args.out / f"fig4_{device.type}.png",
                                           title=f"Fig. 4 analog on {result['environment'].get('gpu', 'CPU')}")
            result["fig4_png"] = png.name
        except ImportError as exc:  # matplotlib (and numpy) are optional here
            result["fig4_png"] = f"skipped: {type(exc).__name__}: {exc}"
        json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(md)
    print(f"[gpu_fine_stage] wrote {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
