"""`edge-vad models info` / `models verify`: what a bundle holds (from its manifest, no torch), or how big the
PyTorch networks are (needs torch, imported only then), next to the paper's figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge_vad.errors import MissingDependency

PAPER_COARSE_PARAMS = 3.6e6  # paper: coarse stage (Adjust MobileNet + QACM) 3.6 M parameters
PAPER_FINE_TRAINABLE = 28.4e6  # paper: fine stage 28.4 M trainable parameters
PAPER_FINE_GFLOPS = 22.17  # paper: fine stage 22.17 GFLOPs
TRAIN_HINT = "pip install 'edge-vad[train]' (after torch==2.13.0, see README)"


def _fmt_count(n: Optional[float]) -> str:
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _budget_cell(checks: Dict[str, Any]) -> str:
    """"pass" when every budget holds, else the failing ones by name (kept short: tables fold)."""
    if not checks:
        return "-"
    failed = [name for name, c in checks.items() if not c.passed]
    return "[green]pass[/green]" if not failed else "[red]FAIL[/red] " + escape(", ".join(failed))


def bundle_table(manifest: Any, title: str = "bundle") -> Table:
    """One row per artifact (and per pipeline total) of a Manifest."""
    table = Table(title=title)
    for col in ("artifact", "stage", "format", "precision", "params", "FLOPs", "bytes", "parity", "budgets"):
        table.add_column(col, overflow="fold")
    for name, art in manifest.artifacts.items():
        b = art.budgets
        parity = "-" if not art.parity else (
            "[green]pass[/green]" if all(p.passed for p in art.parity.values()) else "[red]FAIL[/red]")
        table.add_row(escape(name), art.stage, art.format, art.precision, _fmt_count(b.params if b else None),
                      _fmt_count(b.flops if b else None), _fmt_bytes(art.bytes), parity,
                      _budget_cell(b.checks) if b else "-")
    for name, b in manifest.pipeline_budgets.items():
        table.add_row(f"[bold]{escape(name)}[/bold]", escape(b.counted_from), "", "", _fmt_count(b.params),
                      _fmt_count(b.flops), _fmt_bytes(b.bytes), "", _budget_cell(b.checks))
    return table


def _bundle_info(target: str, console: Console) -> None:
    from edge_vad.bundle import load_manifest, resolve_bundle_dir

    folder = resolve_bundle_dir(target)
    manifest = load_manifest(folder)
    console.print(bundle_table(manifest, title=f"bundle {folder} ({manifest.format_version}, made {manifest.created_at})"))
    fine = f", fine: {manifest.fine.encoder} ({len(manifest.classes)} classes)" if manifest.fine else ", no fine stage"
    console.print(f"coarse: {manifest.coarse.backbone}, feature {manifest.coarse.feature_dim}-d, "
                  f"QACM window {manifest.coarse.window}{fine}; targets: {', '.join(manifest.targets)}")
    for line in package_weight_notes(manifest):
        console.print(escape(line))
    from edge_vad.bundle.edgetpu_compile import compile_notes

    for line in compile_notes(manifest):
        console.print(escape(line))


def package_weight_notes(manifest: Any) -> List[str]:
    """One line per artifact whose weights stay in a pip package (its bytes column counts the graph only)."""
    from edge_vad.bundle.package_weights import default_cache_dir

    return [f"{art.file}: + {pw.bytes / 1e6:.2f} MB of ImageNet weights from pip package {pw.package} {pw.version} "
            f"({len(pw.keys)} tensors), laid out on first load in {default_cache_dir()}"
            for art in manifest.artifacts.values() if (pw := art.package_weights) is not None]


def network_parameter_counts() -> List[Tuple[str, int, Optional[float], str]]:
    """(network, parameters, paper figure or None, note) for the PyTorch networks at their default sizes."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise MissingDependency("`edge-vad models info` without a bundle counts the PyTorch networks and needs torch; "
                                f"install it with: {TRAIN_HINT}, or pass a bundle folder") from None
    from edge_vad.constants import XD_VIOLENCE_CLASSES
    from edge_vad_models.backbones import AdjustMobileNet
    from edge_vad_models.coarse_heads import AFEDTeacher, QACMStudent
    from edge_vad_models.fine.fine_stage import DEFAULT_HIDDEN_DIM, FineStage
    from edge_vad_models.training.fine import FineTrainConfig, TableOnlyTextEncoder

    def count(module: Any, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

    rows: List[Tuple[str, int, Optional[float], str]] = []
    backbone = AdjustMobileNet(pretrained=False)  # random init: only the shapes matter here
    parts = backbone.parameter_counts()
    dim = backbone.branch_channels
    teacher, student = AFEDTeacher(in_dim=dim), QACMStudent(in_dim=dim)
    rows += [(f"coarse backbone trunk ({backbone.backbone_name})", parts["trunk"], None, "frozen, ImageNet weights"),
             ("coarse backbone branch (deconv F_A)", parts["branch"], None, "trained"),
             ("coarse backbone ImageNet classifier", parts["classifier"], None, "frozen (frame descriptions)"),
             ("AFED teacher (enhanced RWKV)", count(teacher), None, "training only"),
             (f"QACM student (W = {student.window})", count(student), None, "runs on every frame"),
             ("coarse on device: trunk + branch + QACM", parts["trunk"] + parts["branch"] + count(student),
              PAPER_COARSE_PARAMS, "what runs per frame for the score (the ImageNet classifier excluded)")]

    # lite0-minilm at the training recipe's sizes: the trainable part depends on shapes only.
    cfg = FineTrainConfig()
    minilm = TableOnlyTextEncoder(embed_dim=384, width=384, context_length=256)  # all-MiniLM-L6-v2 shapes
    lite = FineStage(XD_VIOLENCE_CLASSES, minilm, [""], feature_dim=backbone.spec.trunk_channels,
                     hidden_dim=cfg.hidden_dim, n_ctx=cfg.n_ctx)
    rows.append((f"fine lite0-minilm trainable (hidden {cfg.hidden_dim})", lite.trainable_parameter_count(),
                 PAPER_FINE_TRAINABLE, "image side reuses the coarse trunk; MiniLM text side is frozen, off-device"))

    # clip-vit-b16 at the paper's sizes, from open_clip's ViT-B-16 config (random weights, nothing downloaded).
    from edge_vad_models.fine.clip_vit_b16 import DEFAULT_MODEL_NAME, import_open_clip

    open_clip = import_open_clip()
    clip_cfg = open_clip.get_model_config(DEFAULT_MODEL_NAME)
    clip = open_clip.CLIP(**clip_cfg)
    text_width, embed = clip_cfg["text_cfg"]["width"], clip_cfg["embed_dim"]
    clip_text = TableOnlyTextEncoder(embed_dim=embed, width=text_width, context_length=clip_cfg["text_cfg"]["context_length"])
    fine_clip = FineStage(XD_VIOLENCE_CLASSES, clip_text, [""], feature_dim=embed, hidden_dim=DEFAULT_HIDDEN_DIM)
    rows += [(f"fine clip-vit-b16 trainable (hidden {DEFAULT_HIDDEN_DIM})", fine_clip.trainable_parameter_count(),
              PAPER_FINE_TRAINABLE, "RWKV video branch + prompt context"),
             ("CLIP ViT-B/16 image tower (frozen)", count(clip.visual), None, "runs on device while the gate is open"),
             ("CLIP ViT-B/16 text tower (frozen)", count(clip) - count(clip.visual), None,
              "off-device: replaced by the text table")]
    return rows


def info(target: Optional[str], console: Optional[Console] = None) -> None:
    """A bundle folder (or "default"): its artifacts from the manifest. None: the PyTorch networks' sizes."""
    console = console or Console()
    if target is not None:
        _bundle_info(target, console)
        return
    table = Table(title="TCVADS networks (PyTorch, default sizes)")
    for col in ("network", "parameters", "paper", "note"):
        table.add_column(col, overflow="fold")
    for name, params, paper, note in network_parameter_counts():
        table.add_row(escape(name), _fmt_count(params), _fmt_count(paper) if paper else "", escape(note))
    console.print(table)
    console.print(f"paper: fine stage {PAPER_FINE_GFLOPS} GFLOPs; for FLOPs counted on exported graphs run "
                  "`edge-vad models info BUNDLE`")


def verify(bundle: Path | str, console: Optional[Console] = None) -> None:
    """Re-hash every artifact of `bundle` and print the manifest summary; EdgeVadError on any mismatch."""
    from edge_vad.bundle import verify_bundle

    console = console or Console()
    report = verify_bundle(bundle)
    console.print(bundle_table(report.manifest, title=f"bundle {bundle}"))
    console.print(escape(report.summary()))
