"""Command tree of `edge-vad`. Each command is a thin shell over a library function."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import typer

from edge_vad import __version__
from edge_vad.errors import NotBuiltYet

app = typer.Typer(
    help="edge-vad: explainable two-stage video anomaly detection (TCVADS) for Jetson and Coral.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
train_app = typer.Typer(help="Train the TCVADS heads (needs the `train` extra and torch==2.13.0).", no_args_is_help=True)
explain_app = typer.Typer(help="Explanations: heatmaps, pointing game, t-SNE, LIME R^2.", no_args_is_help=True)
models_app = typer.Typer(help="Inspect networks and model bundles; list runtime backends.", no_args_is_help=True)
features_app = typer.Typer(help="Extract frame and snippet features from videos.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(explain_app, name="explain")
app.add_typer(models_app, name="models")
app.add_typer(features_app, name="features")


def _not_built(what: str, issue: int) -> None:
    raise NotBuiltYet(f"`edge-vad {what}` is not built yet (tracked in issue {issue}); nothing was run")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edge-vad {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="Debug logging (-vv also shows OpenCV's own warnings)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 1 else logging.INFO)
    if verbose < 2:
        # OpenCV / FFmpeg print their own warnings on stderr; errors reach the user as one line from us.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname).1s %(name)s: %(message)s", force=True)


@app.command("validate-config")
def validate_config(file: Path = typer.Argument(..., help="TOML config file to check.")) -> None:
    """Check a config file: prints OK or one line per problem (exit 1)."""
    from edge_vad.config import config_errors, read_toml

    errors = config_errors(read_toml(file), str(file))
    if errors:
        for line in errors:
            typer.echo(line, err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: OK")


@app.command()
def run(
    source: Optional[str] = typer.Option(None, "--source", help="Video file, image folder, /dev/videoN, csi://N, rtsp:// or http:// URI."),
    camera: Optional[str] = typer.Option(None, "--camera", help="Camera device, e.g. /dev/video0 (shorthand for --source)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config (see deploy/edge-vad.toml)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Model bundle folder (default: the shipped bundle)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Force a backend (see `edge-vad models backends`)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write scores.csv, events.jsonl and curve.png here."),
    stride: Optional[int] = typer.Option(None, "--stride", min=1, help="Run the coarse stage on every Nth frame."),
    width: Optional[int] = typer.Option(None, "--width", min=1, help="Frame width (cameras: requested; files: resized)."),
    height: Optional[int] = typer.Option(None, "--height", min=1, help="Frame height (cameras: requested; files: resized)."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.1, help="Camera rate to request (image folders: playback rate)."),
    loop: bool = typer.Option(False, "--loop", help="Restart files and image folders at their end."),
    events_dir: Optional[Path] = typer.Option(None, "--events-dir", help="Where events.jsonl, clips/ and snapshots/ go (default: the config's events.dir)."),
    no_http: bool = typer.Option(False, "--no-http", help="Do not serve /healthz and /metrics."),
) -> None:
    """Watch a camera or a file and raise explained anomaly events."""
    from edge_vad.cli.run_cmd import run_command

    run_command(source, camera, config, bundle, backend, stride, width, height, fps, loop, report, events_dir, no_http)


@app.command()
def bench(
    target: str = typer.Option("host", "--target", help="Target profile: jetson-nano, jetson-orin-nano, coral-usb, coral-devboard, host."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON."),
) -> None:
    """Budgets, per-stage latency and the cascade against always-on, for a target board."""
    _not_built("bench", 6)


@app.command()
def export(
    checkpoint: str = typer.Option("default", "--checkpoint", help="Trained checkpoint folder, or `default`."),
    targets: str = typer.Option("onnx", "--targets", help="Comma list of onnx, tflite-int8, tensorrt."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of real frames or videos for int8 calibration and parity."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle folder."),
    fine_encoder: str = typer.Option("lite0-minilm", "--fine-encoder", help="lite0-minilm or clip-vit-b16."),
    clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help="Local CLIP ViT-B/16 checkpoint (clip-vit-b16)."),
) -> None:
    """Export trained checkpoints to a model bundle (ONNX, int8 TFLite; TensorRT engines are built on the device)."""
    from edge_vad.cli.export_cmd import run_export

    run_export(checkpoint, targets, calib, out, force=force, fine_encoder=fine_encoder, clip_checkpoint=clip_checkpoint)


@app.command("eval")
def eval_cmd(
    gt: Path = typer.Option(..., "--gt", help="Ground truth: UCF/XD annotation file or .npz of frame masks."),
    scores: Path = typer.Option(..., "--scores", help=".npz: video name -> per-frame (or per-snippet) scores."),
    snippet: int = typer.Option(1, "--snippet", help="Scores are per snippet of N frames (16 for the field's features)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON."),
) -> None:
    """Frame-level AP / AUC / Ano-AUC / FAR (and mAP@IoU with class scores)."""
    from edge_vad.cli.eval_cmd import run_eval

    run_eval(gt, scores, snippet, json_out)


@app.command()
def score(
    sources: List[Path] = typer.Argument(..., help="Videos, folders of videos, folders of images."),
    out: Path = typer.Option(..., "--out", help="Output .npz (video name -> per-frame scores)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Model bundle folder (default: the shipped bundle)."),
    snippet: int = typer.Option(1, "--snippet", min=1, help="Store one score per snippet of N frames (their mean); pass the same N to `edge-vad eval --snippet`."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Force a backend (see `edge-vad models backends`)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config: its [gate] and [fine] sections apply."),
    no_fine: bool = typer.Option(False, "--no-fine", help="Coarse scores only (no class scores for mAP)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Batch-score videos offline; the output feeds `edge-vad eval`."""
    from edge_vad.cli.score_cmd import score as run_score

    counts = run_score(sources, out, bundle=bundle, backend=backend, snippet=snippet, config=config,
                       fine=not no_fine, progress=progress)
    typer.echo(f"{out}: {len(counts)} video(s), {sum(counts.values())} frames scored", err=True)


@train_app.command("default")
def train_default(
    data: Path = typer.Option(Path("../shared/data"), "--data", help="Folder holding fight-surv/ and ucsd-ped2/."),
    out: Path = typer.Option(Path("models/default"), "--out", help="Checkpoint folder to write."),
    cache: Path = typer.Option(Path("runs/cache/trunk"), "--cache", help="Trunk-map cache (about 2 GB)."),
    epochs: int = typer.Option(20, "--epochs", min=1, help="Teacher epochs."),
    bo_evaluations: int = typer.Option(15, "--bo-evaluations", min=15, help="Bayesian-optimisation evaluations of T."),
    skip_fine: bool = typer.Option(False, "--skip-fine", help="Train the coarse stage only."),
) -> None:
    """Reproduce the shipped default models from ../shared/data (seeded; about an hour on 2 cores)."""
    from edge_vad.cli.train_cmd import train_default as run

    run(data, out, cache, epochs, bo_evaluations, skip_fine)


@train_app.command("coarse")
def train_coarse() -> None:
    """Train the AFED teacher with MIL on video-level labels from a feature list."""
    _not_built("train coarse --list (feature lists)", 3)


@train_app.command("distill")
def train_distill() -> None:
    """Distil the QACM student from the teacher (temperature by Bayesian optimisation)."""
    _not_built("train distill --list (feature lists)", 3)


@train_app.command("fine")
def train_fine() -> None:
    """Train the fine stage (prompt learning + RWKV video head) from a feature list."""
    _not_built("train fine --list (feature lists)", 3)


@features_app.command("extract")
def features_extract(
    sources: List[Path] = typer.Argument(..., help="Videos, folders of videos or of images, or CSV lists (path,label)."),
    out: Path = typer.Option(..., "--out", help="Folder for <video>.npy, <video>.snippets.npy and feature_spec.json."),
    kind: str = typer.Option("fa", "--feature", help="fa: pooled F_A of the trained branch (the coarse frame feature); trunk: pooled backbone map."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Coarse checkpoint whose branch makes `fa` features (default: shipped)."),
) -> None:
    """Per-video frame and snippet features (16 frames per snippet) with a feature spec file."""
    from edge_vad.cli.train_cmd import features_extract as run

    run(sources, out, kind, checkpoint)


@explain_app.command("heatmap")
def explain_heatmap() -> None:
    """Heatmap overlays for the highest-scoring frames and a contact sheet."""
    _not_built("explain heatmap", 7)


@explain_app.command("pointing")
def explain_pointing() -> None:
    """Pointing-game hit rate of heatmaps against pixel masks."""
    _not_built("explain pointing", 7)


@explain_app.command("tsne")
def explain_tsne() -> None:
    """t-SNE of fine video features and class text embeddings (paper Fig. 8)."""
    _not_built("explain tsne", 7)


@explain_app.command("lime")
def explain_lime() -> None:
    """LIME-style surrogate R^2 for the coarse and the fine stage (paper Table IX)."""
    _not_built("explain lime", 7)


@models_app.command("info")
def models_info(
    target: Optional[str] = typer.Argument(None, help="A bundle folder; omit for the PyTorch networks."),
) -> None:
    """Parameters, FLOPs and sizes per network or per bundle artifact."""
    from edge_vad.cli.models_cmd import info

    info(target)


@models_app.command("verify")
def models_verify(bundle: Path = typer.Argument(..., help="Bundle folder.")) -> None:
    """Re-check the bundle's sha256 hashes and print the manifest summary."""
    from edge_vad.cli.models_cmd import verify

    verify(bundle)


@models_app.command("backends")
def models_backends() -> None:
    """Which runtime backends are available here, and what is missing for the others."""
    from edge_vad.cli.backends_cmd import list_backends

    raise typer.Exit(list_backends())
