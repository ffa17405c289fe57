"""Profile the full-int8 TFLite backbone op by op: what each frame needs against what the graph computes.

    python benchmarks/int8_backbone_profile.py [--model M.tflite] [--rounds 30] [--out benchmarks/int8_profile]

Writes <out>/<model stem>.json, .md and .png. Needs ai-edge-litert (the `coarse` extra) and the checkout.

1. Static: multiply-accumulates per op and which outputs each op serves (edge_vad.bench.tflite_graph).
2. Branches, timed: the graph cut down to F_A's outputs (feature + heatmap) and to the trunk feature alone,
   against the full graph (every output of which each frame needs since the ImageNet classifier left it); one XNNPACK interpreter each on ONE
   thread, timed in turn every round (interleaved); median and minimum over rounds.
3. Op by op, timed: every prefix of the graph (ops 0..k, op k's output as the model output) timed the same way;
   op k's cost = prefix k - prefix k-1 of the MINIMUM over rounds (on a machine shared with other jobs the
   fastest of many runs is the least disturbed one; negative steps, noise, are clipped to 0). XNNPACK may
   partition a prefix differently from the whole graph (an op whose output becomes the model output is not
   fused with the next), so steps are estimates; the branch variants of 2 are exact graphs.
Inputs: real frames of the benchmark stream through the runtime's Preprocessor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_vad.backends.base import TensorSpec
from edge_vad.bench.stream import read_frames
from edge_vad.bench.tflite_graph import prefix, prune, read_graph
from edge_vad.bundle import default_bundle_dir, load_manifest
from edge_vad.runtime.preprocess import Preprocessor

REPO = Path(__file__).resolve().parents[1]
STREAM = REPO / "benchmarks" / "data" / "sample-stream.mp4"
VARIANTS = {  # name -> outputs kept (None: the full graph)
    "full graph (feature, heatmap, trunk_feature)": None,
    "F_A only (feature, heatmap)": ("feature", "heatmap"),
    "no F_A branch (trunk_feature)": ("trunk_feature",),
}
BRANCH_NAMES = {
    ("feature", "heatmap", "trunk_feature"): "shared trunk (Lite0 stem to the 1280-ch head conv)",
    ("feature", "heatmap"): "F_A branch (1 x 1 projection, or the older transposed conv) and the heatmap",
    ("trunk_feature",): "trunk pooling (mean of the 1280-ch head conv)",
    ("feature",): "F_A pooling (mean: the feature)",
}


def interpreter(content: bytes):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    return it


def timed_interleaved(interps: list, feeds: list, rounds: int) -> tuple:
    """(median, minimum) ms per invoke of each interpreter; each round invokes every one once, in turn."""
    samples = [[] for _ in interps]
    for r in range(rounds + 3):
        for i, it in enumerate(interps if r % 2 == 0 else interps[::-1]):
            k = i if r % 2 == 0 else len(interps) - 1 - i
            it.set_tensor(it.get_input_details()[0]["index"], feeds[r % len(feeds)])
            t0 = time.perf_counter()
            it.invoke()
            if r >= 3:
                samples[k].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(s) for s in samples], [min(s) for s in samples]


def feeds_for(model: Path, frames: int = 8) -> list:
    manifest = load_manifest(default_bundle_dir())
    it = interpreter(model.read_bytes())
    d = it.get_input_details()[0]
    scale, zp = d["quantization"]
    spec = TensorSpec("image", tuple(int(x) for x in d["shape"]), np.dtype(d["dtype"]).name, float(scale), int(zp))
    pre = Preprocessor(manifest.preprocessing, spec)
    return [pre(f)["image"].copy() for f in read_frames(STREAM, frames)]


def profile(model: Path, rounds: int) -> dict:
    graph = read_graph(model)
    feeds = feeds_for(model)
    full = model.read_bytes()
    variants = {name: (full if keep is None else prune(model, keep)) for name, keep in VARIANTS.items()}
    branch_ms, branch_min = timed_interleaved([interpreter(b) for b in variants.values()], feeds, rounds)
    print(f"branches timed ({rounds} rounds)", file=sys.stderr)
    prefixes = [interpreter(prefix(model, k)) for k in range(len(graph.ops))]
    _, cumulative = timed_interleaved(prefixes, feeds, rounds)
    print(f"{len(prefixes)} prefixes timed ({rounds} rounds)", file=sys.stderr)
    op_ms = [max(0.0, c - (cumulative[i - 1] if i else 0.0)) for i, c in enumerate(cumulative)]
    by_branch: dict = {}
    for op, ms in zip(graph.ops, op_ms):
        key = tuple(sorted(op.serves))
        b = by_branch.setdefault(BRANCH_NAMES.get(key, ", ".join(key)), {"ops": 0, "macs": 0, "ms": 0.0})
        b["ops"] += 1
        b["macs"] += op.macs
        b["ms"] += ms
    by_type: dict = {}
    for op, ms in zip(graph.ops, op_ms):
        t = by_type.setdefault(op.name, {"ops": 0, "macs": 0, "ms": 0.0})
        t["ops"] += 1
        t["macs"] += op.macs
        t["ms"] += ms
    return {
        "model": str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
        "rounds": rounds, "threads": 1, "delegate": "XNNPACK (the interpreter's default)",
        "total_macs": graph.total_macs,
        "variants_ms": {name: round(ms, 3) for name, ms in zip(variants, branch_ms)},
        "variants_min_ms": {name: round(ms, 3) for name, ms in zip(variants, branch_min)},
        "branches": {k: {**v, "ms": round(v["ms"], 3), "macs_share": round(v["macs"] / graph.total_macs, 4)}
                     for k, v in by_branch.items()},
        "op_types": {k: {**v, "ms": round(v["ms"], 3)} for k, v in by_type.items()},
        "ops": [{"index": op.index, "op": op.name, "out": list(op.outputs[0]) if op.outputs else [], "macs": op.macs,
                 "serves": sorted(op.serves), "cumulative_ms": round(c, 3), "ms": round(ms, 3)}
                for op, c, ms in zip(graph.ops, cumulative, op_ms)],
        "prefix_total_ms": round(cumulative[-1], 3),
    }


def markdown(r: dict) -> str:
    lines = [f"# int8 backbone, op by op: `{r['model']}`", "",
             f"One thread, {r['delegate']}, median of {r['rounds']} interleaved rounds; {r['total_macs'] / 1e6:.1f} M "
             "MACs in all.", "", "| graph | ms per frame, median | minimum |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:.3f} | {r['variants_min_ms'][k]:.3f} |" for k, v in r["variants_ms"].items()]
    lines += ["", f"Op by op (steps of the cumulative minimum; all prefixes: {r['prefix_total_ms']:.3f} ms):", "",
              "| branch | ops | M MACs | MAC share | ms (sum of op steps) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | {v['ops']} | {v['macs'] / 1e6:.2f} | {v['macs_share']:.2%} | {v['ms']:.3f} |"
              for k, v in sorted(r["branches"].items(), key=lambda kv: -kv[1]["macs"])]
    lines += ["", "| op type | ops | M MACs | ms |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['ops']} | {v['macs'] / 1e6:.2f} | {v['ms']:.3f} |"
              for k, v in sorted(r["op_types"].items(), key=lambda kv: -kv[1]["ms"])]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = r["ops"]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    colours = {"trunk": "C0", "deconv": "C1", "head": "C2"}
    for o in ops:
        kind = "trunk" if len(o["serves"]) == 4 else ("deconv" if "heatmap" in o["serves"] or o["serves"] == ["feature"]
                                                       else "head")
        ax.bar(o["index"], o["ms"], color=colours[kind], width=0.8)
    ax2 = ax.twinx()
    ax2.plot([o["index"] for o in ops], [o["cumulative_ms"] for o in ops], "k-", lw=1)
    ax.set_xlabel("op (execution order)")
    ax.set_ylabel("ms per op")
    ax2.set_ylabel("cumulative ms (line)")
    ax.set_title(f"{Path(r['model']).name}, 1 thread, XNNPACK: blue = shared trunk, orange = F_A (deconvolution) "
                 "branch, green = classifier and trunk pooling", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=default_bundle_dir() / "coarse_backbone_int8.tflite")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "int8_profile")
    args = p.parse_args(argv)
    r = profile(args.model.resolve(), args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.model.stem
    with tempfile.NamedTemporaryFile("w", dir=args.out, delete=False, suffix=".tmp") as fh:
        json.dump(r, fh, indent=1)
    Path(fh.name).replace(args.out / f"{stem}.json")
    (args.out / f"{stem}.md").write_text(markdown(r))
    plot(r, args.out / f"{stem}.png")
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
