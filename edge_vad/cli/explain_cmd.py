"""`edge-vad explain ...`: thin shells over edge_vad_models.explain (heatmaps, pointing game, t-SNE, LIME R^2).
They run the PyTorch models of a trained checkpoint, so torch is imported inside the functions (the runtime
never loads it) and its absence is a MissingDependency naming the `train` extra."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from edge_vad.errors import MissingDependency

TRAIN_HINT = "pip install torch==2.13.0 && pip install 'edge-vad[train]'"


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
        import edge_vad_models  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"explanations run the PyTorch models and need the `train` extra ({exc}); "
                                f"install with: {TRAIN_HINT}") from None


def heatmap(source: Path, out: Path, checkpoint: str = "default", top: int = 8) -> dict:
    _require_torch()
    from edge_vad_models.explain.heatmaps import explain_heatmaps

    summary = explain_heatmaps(source, out, checkpoint, top)
    print(f"{out}: {len(summary['files']['overlays'])} overlays, {summary['files']['contact_sheet']}"
          + (f", {summary['files']['teacher_vs_student']}" if "teacher_vs_student" in summary["files"] else ""))
    return summary


def pointing(frames: Sequence[Path], masks: Path, json_out: Path, checkpoint: str = "default",
             tolerance: int = 0) -> dict:
    _require_torch()
    from edge_vad_models.explain.pointing import pointing_game, write_pointing

    report = pointing_game(frames, masks, checkpoint, tolerance=tolerance)
    write_pointing(report, json_out)
    print(f"pointing game over {report['n_frames']} frames: "
          + ", ".join(f"{m} {report[m]['hit_rate']:.3f}" for m in report["maps"])
          + f", chance {report['chance']['hit_rate']:.3f} -> {json_out}")
    return report


def tsne(features_from: str, out: Path, data: Path, cache: Optional[Path], limit: Optional[int], seed: int,
         fold: Optional[int] = None) -> dict:
    _require_torch()
    from edge_vad_models.explain.tsne import explain_tsne

    summary = explain_tsne(out, features_from, data, cache, limit, seed, fold)
    print(json.dumps({k: summary[k] for k in ("figure", "n_videos", "n_snippets", "nearest_text_accuracy",
                                              "silhouette_cosine")}, indent=2))
    return summary


def lime(videos: Optional[int], json_out: Path, checkpoint: str, data: Path, cache: Optional[Path], segments: int,
         samples: int, fill: str, seed: int, fold: Optional[int] = None) -> dict:
    _require_torch()
    from edge_vad_models.explain.lime_r2 import LimeConfig, explain_lime

    cfg = LimeConfig(segments=segments, samples=samples, fill=fill, seed=seed)
    report = explain_lime(videos, json_out, checkpoint, data, cache, cfg, fold)
    stages = {s: report[s]["r2_mean"] for s in ("coarse", "fine") if report.get(s)}
    print(f"LIME surrogate R^2 over {len(report['videos'])} videos: "
          + ", ".join(f"{s} {v:.3f}" if v is not None else f"{s} undefined" for s, v in stages.items())
          + f" -> {json_out}")
    return report
