"""`edge-vad export`: trained checkpoints -> a model bundle. A thin shell over edge_vad_export.exporter,
imported only when the command runs (the runtime never imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from edge_vad.errors import MissingDependency

EXPORT_HINT = "pip install 'edge-vad[train,export]' (after torch==2.13.0, see README)"


def run_export(checkpoint: str, targets: str, calib: Optional[Path], out: Path, force: bool = False,
               fine_encoder: str = "lite0-minilm", clip_checkpoint: Optional[Path] = None,
               inline_weights: bool = False) -> Dict[str, Any]:
    """Check the options, export, print the bundle's table; returns {"bundle": path, "manifest": {...}}."""
    try:
        from edge_vad_export.export_plan import plan_export
        from edge_vad_export.exporter import export_bundle
    except ImportError as exc:
        raise MissingDependency(f"export needs the export toolchain ({exc}); install it with: {EXPORT_HINT}") from None
    from rich.console import Console

    from edge_vad.cli.models_cmd import bundle_table

    plan = plan_export(checkpoint, targets, calib, out, force, fine_encoder, clip_checkpoint, inline_weights)
    console = Console(stderr=True)
    manifest = export_bundle(plan, console=console)
    console.print(bundle_table(manifest, title=f"bundle {plan.out}"))
    return {"bundle": str(plan.out), "manifest": manifest.model_dump(mode="json", by_alias=True)}
