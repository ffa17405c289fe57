"""What one export run shares between its steps: progress lines, tool versions, the run's accumulated state
(`ExportWork`) and the one way an ONNX artifact is checked, counted and added to the bundle."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edge_vad_export.export_plan import FILES, ExportPlan


class Progress:
    """Progress lines through rich (a plain console when none is given)."""

    def __init__(self, console: Any = None):
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console

    def step(self, text: str) -> None:
        self.console.print(f"[bold cyan]export[/bold cyan] {text}")

    def done(self, name: str, path: Path, checks: dict[str, dict[str, Any]]) -> None:
        worst = ", ".join(f"{k} {v['value']:.4g}" for k, v in checks.items())
        self.console.print(f"  [green]ok[/green] {path.name} ({path.stat().st_size / 1e6:.2f} MB){': ' + worst if worst else ''}")

    def warn(self, text: str) -> None:
        self.console.print(f"  [yellow]note[/yellow] {text}")

    def note(self, text: str) -> None:
        self.console.print(f"  [dim]info[/dim] {text}")


def tool_versions(extra: Sequence[str] = ()) -> dict[str, str]:
    out = {}
    for dist in ("edge-vad", "torch", "onnx", "onnxruntime", "numpy", "efficientnet-lite-pytorch", *extra):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def resized_rgb(frame_bgr: np.ndarray, preprocess: Any) -> np.ndarray:
    """uint8 BGR frame -> uint8 RGB [size, size, 3] resized as `preprocess` says (TensorRT calibration data)."""
    from edge_vad.resize import resize_square

    img = resize_square(frame_bgr, preprocess.size, preprocess.interpolation)
    return np.ascontiguousarray(img[..., ::-1] if preprocess.pixel_format == "RGB" else img)


def io_entries(values: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("name", "shape", "dtype", "layout", "scale", "zero_point")
    return [{k: v[k] for k in keep if k in v and v[k] is not None} for v in values]


@dataclass
class ExportWork:
    """What one export run accumulates."""

    plan: ExportPlan
    writer: Any
    progress: Progress
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # artifact -> budgets entry
    backbone_runner: Any = None  # onnxruntime session of the fp32 backbone (int8 checks), made on first use
    backbone_onnx: Optional[Path] = None  # the loadable fp32 backbone (with its package weights laid out)
    scratch: Optional[Path] = None  # a temporary folder for this run (deleted at its end)
    head_input: str = "feature"  # the checkpoint's head input (edge_vad.head_input)
    edgetpu_renames: dict[str, str] = field(default_factory=dict)  # int8 artifact -> its Edge TPU compiled artifact
    trt_reference: Optional[dict[str, Any]] = None  # the tensorrt target's reference record (trt_reference.py)


def onnx_artifact(work: ExportWork, name: str, stage: str, graph: Any, parity: dict[str, dict[str, Any]],
                   **fields: Any) -> None:
    from edge_vad_export.budgets import artifact_budgets
    from edge_vad_export.parity import require_passed

    require_passed(FILES[name], parity)
    package = fields.get("package_weights")
    budgets = artifact_budgets(graph.path, graph.path, "onnx", package_bytes=package["bytes"] if package else 0)
    work.counts[name] = budgets
    work.writer.add(name, FILES[name], stage, "onnx", "fp32", inputs=io_entries(graph.inputs),
                    outputs=io_entries(graph.outputs), parity=parity, budgets=budgets,
                    conversion=graph.conversion(), **fields)
    work.progress.done(name, graph.path, parity)


def ort_backbone(work: ExportWork, x: np.ndarray) -> dict[str, np.ndarray]:
    from edge_vad_export.parity import OrtRunner

    if work.backbone_runner is None:
        work.backbone_runner = OrtRunner(work.backbone_onnx)
    return work.backbone_runner.run({"image": x})
