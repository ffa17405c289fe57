"""The Python half of scripts/arm64-check.sh: prepares its inputs, probes each architecture, compares the results.

    python scripts/arm64_compare.py frames SAMPLE.mp4 OUT_DIR --count 64    first N frames as lossless PNG
    python scripts/arm64_compare.py exact-area-copy BUNDLE OUT_DIR          the bundle, preprocessing "exact-area"
    python scripts/arm64_compare.py probe FRAMES OUT_DIR                    (on each arch) resize outputs + versions
    python scripts/arm64_compare.py compare X86_DIR ARM64_DIR OUT_DIR       max |diff| per case; report + PNG

`compare` reads, under each architecture's folder, `probe/` (from `probe`) and `<case>/report/scores.csv` (from
`edge-vad run --report`), where a case is "<bundle label>.<backend>". It exits 1 when a bundle whose preprocessing
is "exact-area" misses its backend's goal, else 0: the fp32 graphs (onnxruntime) within 1e-4 per frame (the issue's
figure); the int8 TFLite path within INT8_SCORE_GOAL, because TFLite's optimized int8 kernels themselves round
differently on arm64 (scripts/arm64_int8_probe.py: the same int8 input gives features up to 10 quanta apart;
only the ~100x slower reference kernels agree bit for bit). Bundles on other interpolations are reported, not
held to a goal (cv2 INTER_AREA rounds differently on arm64, DESIGN.md).
Runs on the host's and the guest's Python (3.8+): numpy, OpenCV and edge_vad only; matplotlib where present.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

SCORE_GOAL = 1e-4  # issue 12: arm64 and x86 scores within 1e-4 with the exact-area preprocessing (fp32 graphs)
# int8 TFLite: kernel rounding differs per architecture (module doc). Measured 1.6e-2 at most on 64 frames, against
# an int8-vs-fp32 gap of +0.02 to +0.07 per segment on x86 alone; an architecture must not add more than that.
INT8_SCORE_GOAL = 3e-2
GOALS = {"onnxruntime": SCORE_GOAL, "tflite": INT8_SCORE_GOAL}


def goal_for(backend: str) -> float:
    return GOALS.get(backend, SCORE_GOAL)
RESIZE_METHODS = ("exact-area", "area")  # edge_vad.resize.exact_area_resize vs plain cv2.INTER_AREA


# ----------------------------------------------------------------------------- inputs (host)
def extract_frames(sample: Path, out_dir: Path, count: int) -> int:
    """The first `count` frames of `sample` as PNG (lossless: both architectures read the very same pixels)."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(sample))
    n = 0
    while n < count:
        ok, frame = cap.read()
        if not ok:
            break
        cv2.imwrite(str(out_dir / f"{n:05d}.png"), frame)
        n += 1
    cap.release()
    if n < count:
        raise SystemExit(f"arm64_compare: {sample} has only {n} frames, {count} asked for")
    return n


def exact_area_copy(bundle: Path, out_dir: Path) -> str:
    """Copy `bundle` with its manifest's preprocessing switched to "exact-area". The manifest is not among the
    hashed artifacts (edge_vad/bundle/verify.py), so the copy verifies; returns verify's summary line."""
    from edge_vad.bundle.verify import verify_bundle
    from edge_vad.constants import EXACT_AREA
    from edge_vad.resize import EXACT_AREA_TEXT

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(bundle, tmp)
    manifest_path = tmp / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["preprocessing"]["interpolation"] = EXACT_AREA
    manifest["preprocessing"]["resize"] = EXACT_AREA_TEXT
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    summary = verify_bundle(tmp).summary()
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return summary


def bundle_interpolation(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["preprocessing"]["interpolation"]


# ----------------------------------------------------------------------------- probe (each architecture)
def _version(module: str) -> Optional[str]:
    try:
        mod = __import__(module, fromlist=["__version__"])
    except Exception:  # noqa: BLE001 - a missing or broken library is reported as absent
        return None
    return str(getattr(mod, "__version__", "?"))


def probe(frames: Path, out_dir: Path, size: int = 224) -> None:
    """Resize every frame with both methods (saved for a bit-for-bit comparison) and record the versions."""
    import cv2

    from edge_vad.resize import exact_area_resize

    paths = sorted(frames.glob("*.png"))
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    out = {
        "exact-area": np.stack([exact_area_resize(im, size) for im in images]),
        "area": np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images]),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "resize.npz", **{k.replace("-", "_"): v for k, v in out.items()})
    versions = {"machine": platform.machine(), "python": platform.python_version(), "cv2": cv2.__version__}
    for module in ("numpy", "onnxruntime", "ai_edge_litert", "edge_vad"):
        versions[module] = _version(module)
    (out_dir / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")
    print(f"probe: {len(images)} frames resized both ways on {versions['machine']}")


# ----------------------------------------------------------------------------- compare (host)
def read_scores(path: Path) -> Dict[int, float]:
    with open(path, newline="") as f:
        return {int(row["frame"]): float(row["coarse_score"]) for row in csv.DictReader(f)}


def compare_scores(x86: Dict[int, float], arm: Dict[int, float], goal: float = SCORE_GOAL) -> dict:
    if sorted(x86) != sorted(arm):
        return {"frames": 0, "error": f"frame sets differ: x86 {len(x86)} frames, arm64 {len(arm)}"}
    diff = np.array([abs(x86[i] - arm[i]) for i in sorted(x86)])
    return {"frames": int(diff.size), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "frames_over_goal": int((diff > goal).sum()),
            "score_range": [float(min(x86.values())), float(max(x86.values()))]}


def compare_resize(x86: Path, arm: Path) -> dict:
    a, b = np.load(x86), np.load(arm)
    out = {}
    for method in RESIZE_METHODS:
        key = method.replace("-", "_")
        d = np.abs(a[key].astype(np.int16) - b[key].astype(np.int16))
        out[method] = {"frames": int(d.shape[0]), "identical_frames": int((d.reshape(d.shape[0], -1).max(1) == 0).sum()),
                       "differing_values": int((d > 0).sum()), "fraction": float((d > 0).mean()), "max_abs": int(d.max())}
    return out


def compare(x86_dir: Path, arm_dir: Path, out_dir: Path, interpolations: Dict[str, str]) -> int:
    cases = sorted({p.name for d in (x86_dir, arm_dir) if d.is_dir() for p in d.iterdir()
                    if p.is_dir() and p.name != "probe"})
    rows: List[dict] = []
    failed = []
    for case in cases:
        label, backend = case.rsplit(".", 1)
        x86_csv, arm_csv = (d / case / "report" / "scores.csv" for d in (x86_dir, arm_dir))
        row = {"case": case, "bundle": label, "backend": backend, "interpolation": interpolations.get(label, "?")}
        missing = [arch for arch, f in (("x86", x86_csv), ("arm64", arm_csv)) if not f.is_file()]
        if missing:
            row.update(frames=0, error=f"no {' and no '.join(missing)} result (see its run.log)")
        else:
            row.update(compare_scores(read_scores(x86_csv), read_scores(arm_csv), goal_for(backend)))
        held = row["interpolation"] == "exact-area"
        row["goal_value"] = goal_for(backend)
        row["goal"] = ("met" if row.get("max_abs_diff", 1.0) <= goal_for(backend) else "MISSED") if held else "not held"
        if held and row["goal"] != "met":
            failed.append(case)
        rows.append(row)
    resize = compare_resize(x86_dir / "probe" / "resize.npz", arm_dir / "probe" / "resize.npz")
    versions = {arch: json.loads((d / "probe" / "versions.json").read_text()) for arch, d in
                (("x86", x86_dir), ("arm64", arm_dir))}
    report = {"score_goal": SCORE_GOAL, "int8_score_goal": INT8_SCORE_GOAL, "cases": rows, "resize": resize, "versions": versions}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (out_dir / "report.md").write_text(text)
    print(text)
    plot(x86_dir, arm_dir, rows, out_dir / "arm64-vs-x86.png")
    return 1 if failed or not rows else 0


def markdown(report: dict) -> str:
    lines = ["| bundle | interpolation | backend | frames | max abs diff | mean abs diff | frames over the goal | goal |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in report["cases"]:
        if "error" in r:
            lines.append(f"| {r['bundle']} | {r['interpolation']} | {r['backend']} | - | {r['error']} | | | "
                         f"{r['goal']} |")
            continue
        lines.append(f"| {r['bundle']} | {r['interpolation']} | {r['backend']} | {r['frames']} | "
                     f"{r['max_abs_diff']:.2e} | {r['mean_abs_diff']:.2e} | {r['frames_over_goal']} | "
                     f"{r['goal']} (<= {r['goal_value']:.0e}) |")
    lines += ["", "Resize alone, arm64 vs x86 on the same PNG frames (uint8 values that differ):", "",
              "| method | frames | identical frames | differing values | fraction | max abs |", "|---|---:|---:|---:|---:|---:|"]
    for method, r in report["resize"].items():
        lines.append(f"| {method} | {r['frames']} | {r['identical_frames']} | {r['differing_values']} | "
                     f"{r['fraction']:.4%} | {r['max_abs']} |")
    lines += ["", "Versions: " + "; ".join(f"{arch}: " + ", ".join(f"{k} {v}" for k, v in v.items())
                                           for arch, v in report["versions"].items()), ""]
    return "\n".join(lines)


def plot(x86_dir: Path, arm_dir: Path, rows: List[dict], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the report tables are written anyway
        return
    ok = [r for r in rows if "max_abs_diff" in r]
    if not ok:
        return
    fig, axes = plt.subplots(len(ok), 1, figsize=(8, 2.4 * len(ok)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], ok):
        x = read_scores(x86_dir / r["case"] / "report" / "scores.csv")
        a = read_scores(arm_dir / r["case"] / "report" / "scores.csv")
        idx = sorted(x)
        ax.plot(idx, [x[i] for i in idx], label="x86-64", lw=1.5)
        ax.plot(idx, [a[i] for i in idx], label="arm64 (qemu)", lw=1, ls="--")
        ax.set_ylabel("coarse score")
        ax.set_title(f"{r['bundle']} ({r['interpolation']}), {r['backend']}: max |diff| {r['max_abs_diff']:.1e}",
                     fontsize=9)
        twin = ax.twinx()
        twin.semilogy(idx, [max(abs(x[i] - a[i]), 1e-7) for i in idx], color="tab:red", lw=0.8, alpha=0.6)
        twin.axhline(SCORE_GOAL, color="tab:red", ls=":", lw=0.8)
        twin.set_ylim(1e-7, 1)
        twin.set_ylabel("|diff| (floor 1e-7)", color="tab:red", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("frames")
    p.add_argument("sample", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--count", type=int, default=64)
    p = sub.add_parser("exact-area-copy")
    p.add_argument("bundle", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("interpolation")
    p.add_argument("bundle", type=Path)
    p = sub.add_parser("probe")
    p.add_argument("frames", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("compare")
    p.add_argument("x86", type=Path)
    p.add_argument("arm64", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--bundle", action="append", default=[], metavar="LABEL=DIR",
                   help="a bundle's label and folder (its interpolation decides whether the goal holds)")
    args = ap.parse_args(argv)
    if args.cmd == "frames":
        print(f"frames: {extract_frames(args.sample, args.out, args.count)} written to {args.out}")
    elif args.cmd == "exact-area-copy":
        print(exact_area_copy(args.bundle, args.out))
    elif args.cmd == "interpolation":
        print(bundle_interpolation(args.bundle))
    elif args.cmd == "probe":
        probe(args.frames, args.out)
    else:
        labels = dict(item.split("=", 1) for item in args.bundle)
        return compare(args.x86, args.arm64, args.out, {k: bundle_interpolation(Path(v)) for k, v in labels.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
