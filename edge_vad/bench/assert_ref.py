"""`--assert`: compare a bench result with benchmarks/reference/<target>.json, pycoral style (+-30 %).

A reference file records the figures and how they were measured:
    {"target": "host", "tolerance": 0.3,
     "measured": {"command": "...", "host": {...}, "date": "...", "notes": "..."},
     "figures": {"stages.coarse_backbone.p50_ms": 17.1, "end_to_end.fps": 14.8, ...}}
Figure keys are dotted paths into the bench JSON. A figure fails when |value - reference| > tolerance x
|reference|, or when the reference has a number and this run has none. Reference figures that are null are
not compared. Without a reference file for the target, --assert is an error (nobody measured that board).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import edge_vad
from edge_vad.errors import EdgeVadError

TOLERANCE = 0.30  # issue 6: fail outside +-30 % of the reference
REFERENCE_DIR = Path("benchmarks") / "reference"
# What a reference records: latencies of every stage that runs, the coarse fps and its instruction count, end to
# end (and how much of the coarse stage's speed it keeps), memory, the cascade (clip-vit-b16 and shipped bundle),
# the RWKV figures.
REFERENCE_FIGURES = (
    "stages.preprocess.p50_ms", "stages.coarse_backbone.p50_ms", "stages.qacm.p50_ms", "stages.fine_encoder.p50_ms",
    "stages.fine_head.p50_ms", "coarse_frame_to_score.fps", "instructions.ir_per_frame", "end_to_end.fps",
    "end_to_end.coarse_fps", "end_to_end.fps_vs_coarse", "end_to_end.gate_duty", "end_to_end.peak_rss_mb",
    "cascade_vs_always_on.speedup", "cascade_vs_always_on.bound", "cascade_vs_always_on.speedup_over_bound",
    "cascade_vs_always_on.shipped_bundle.speedup", "cascade_vs_always_on.shipped_bundle.auc_cascade",
    "cascade_vs_always_on.shipped_bundle.auc_always_on", "rwkv_vs_transformer.speedup_at_max_length",
    "rwkv_vs_transformer.streaming.rwkv_step_growth",
)


def reference_dirs() -> List[Path]:
    """Where reference files are looked for: ./benchmarks/reference, then the checkout edge_vad lives in."""
    return [Path.cwd() / REFERENCE_DIR, Path(edge_vad.__file__).resolve().parents[1] / REFERENCE_DIR]


def find_reference(target: str, dirs: Optional[Iterable[Path]] = None) -> Path:
    """The reference file of `target`; EdgeVadError (exit 2) naming where it looked when there is none."""
    looked = list(dirs) if dirs is not None else reference_dirs()
    for d in looked:
        path = d / f"{target}.json"
        if path.is_file():
            return path
    raise EdgeVadError(f"--assert: no reference figures for target {target!r} ({REFERENCE_DIR / (target + '.json')} "
                       "does not exist): nobody has measured this target yet; run bench on it with --json and record "
                       "the figures first", exit_code=2)


def load_reference(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        figures = data["figures"]
        if not isinstance(figures, dict):
            raise TypeError("figures is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EdgeVadError(f"{path}: not a bench reference file ({exc}); expected {{target, measured, figures}}",
                           exit_code=2) from None
    return data


def lookup(result: Dict[str, Any], dotted: str) -> Any:
    node: Any = result
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def compare(result: Dict[str, Any], reference: Dict[str, Any], tolerance: Optional[float] = None) -> List[str]:
    """One line per figure outside tolerance (empty: all within)."""
    tol = float(reference.get("tolerance", TOLERANCE) if tolerance is None else tolerance)
    failures = []
    for key, ref in reference["figures"].items():
        if ref is None:
            continue
        value = lookup(result, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            failures.append(f"{key}: no value in this run (reference {ref:g})")
            continue
        if abs(value - ref) > tol * abs(ref):
            change = (value - ref) / abs(ref) if ref else float("inf")
            failures.append(f"{key}: {value:g} vs reference {ref:g} ({change:+.0%}, allowed +-{tol:.0%})")
    return failures


def reference_from_result(result: Dict[str, Any], command: str, notes: str = "") -> Dict[str, Any]:
    """A reference file's content from a bench result (every REFERENCE_FIGURE this run has a number for)."""
    figures = {}
    for key in REFERENCE_FIGURES:
        value = lookup(result, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            figures[key] = value
    return {"target": result["target"], "tolerance": TOLERANCE,
            "measured": {"command": command, "host": result.get("host"), "on_target": result.get("on_target"),
                         "date": result.get("run", {}).get("started_at"), "run": result.get("run"), "notes": notes},
            "figures": figures,
            # what the target profile's [runtime] threads was chosen from (not compared by --assert)
            "threads": result.get("threads")}
