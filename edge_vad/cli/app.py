"""Command tree of `edge-vad`. Each command is a thin shell over a library function."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edge_vad import __version__

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


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted. A plain StreamHandler keeps the
    stream it was created with; when `main()` runs in-process (tests, embedding) that stream may be
    closed later and logging then fails with 'I/O operation on closed file'."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property ignores it
        pass


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
    # Replace the root handlers WITHOUT closing them (basicConfig(force=True) would): a library's
    # handler (absl's, installed when litert-torch is imported) may hold the process's real stderr,
    # and closing it loses stderr for good ("lost sys.stderr") when main() runs in-process.
    root = logging.getLogger()
    for old_handler in list(root.handlers):
        root.removeHandler(old_handler)
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


PRECISION_HELP = ("The backend's precision: fp32, fp16 or int8. TensorRT: the engines' (default: the config's runtime "
                  "precision setting, else the bundle's, fp16; int8 needs a bundle exported with --calib and a GPU with "
                  "fast int8, not the Jetson Nano). CPU: int8 runs the int8 TFLite models, fp32 the ONNX graphs (default: "
                  "int8 where the bundle's int8 parity passed).")


@app.command("validate-config")
def validate_config(file: Path = typer.Argument(..., help="TOML config file to check.")) -> None:
    """Check a config file: prints OK or one line per problem (exit 1), including optional libraries the
    config needs that are not installed (e.g. paho-mqtt for [mqtt] enabled = true; exit 3)."""
    from edge_vad.config import Config, config_errors, read_toml
    from edge_vad.errors import MissingDependency
    from edge_vad.runtime.preflight import extras_problems

    data = read_toml(file)
    errors = config_errors(data, str(file))
    missing = [] if errors else [f"{file}: {line}" for line in extras_problems(Config.model_validate(data))]
    if errors or missing:
        for line in errors + missing:
            typer.echo(line, err=True)
        raise typer.Exit(1 if errors else MissingDependency.exit_code)
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
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="The camera's folder from `edge-vad calibrate` (scene model and gate)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
) -> None:
    """Watch a camera or a file and raise explained anomaly events.

    \b
    Exit codes:
      0    done, or stopped by SIGTERM / Ctrl-C while running
      1    bad input, or a fault that stopped the run (one error line)
      3    a library the run needs is missing (paho-mqtt for MQTT)
      4    finished, but LOST OUTPUTS: a clip, snapshot, event line,
           MQTT event or report could not be written (full disk,
           broken folder); \\[events] fail_on_lost_outputs = false: 0
      130  Ctrl-C while the sources were still opening
    """
    from edge_vad.cli.run_cmd import run_command

    run_command(source, camera, config, bundle, backend, stride, width, height, fps, loop, report, events_dir, no_http,
                calibration, precision)


@app.command()
def review(
    events_dir: Path = typer.Argument(..., help="An events folder (holding events.jsonl, clips/, snapshots/)."),
    port: int = typer.Option(8086, "--port", min=0, max=65535, help="Port to serve on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --token-file."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding the access token (one line)."),
) -> None:
    """Serve the review page for recorded events, without a camera running."""
    from edge_vad.cli.review_cmd import review as run_review

    run_review(events_dir, host, port, token_file)


@app.command()
def events(
    events_dir: Path = typer.Argument(Path("events"), help="Events folder (or its events.jsonl); default ./events."),
    since: Optional[str] = typer.Option(None, "--since", help="Only records since: today, yesterday, 10m, 2h, 2026-12-02, '2026-12-02 13:00'."),
    camera: Optional[List[str]] = typer.Option(None, "--camera", help="Only this camera (repeat for several)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing records as they are appended (Ctrl-C ends)."),
    output: str = typer.Option("short", "--output", "-o", help="short (one line per record) or json (the records)."),
    utc: bool = typer.Option(False, "--utc", help="Show times in UTC instead of local time."),
) -> None:
    """List and follow event records, the way journalctl lists a journal."""
    from edge_vad.cli.events_cmd import events as run_events

    try:
        run_events(events_dir, since=since, cameras=camera, follow=follow, output=output, utc=utc)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except BrokenPipeError:  # `edge-vad events | head`
        sys.stderr.close()
        raise typer.Exit(0) from None


@app.command()
def bench(
    target: str = typer.Option("host", "--target", help="Target profile: jetson-nano, jetson-orin-nano, coral-usb, coral-devboard, host."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON (Markdown and PNGs go beside it; default benchmarks/results/)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Model bundle folder (default: the shipped bundle)."),
    source: Optional[Path] = typer.Option(None, "--source", help="Benchmark video, labels beside it as <stem>.json (default benchmarks/data/sample-stream.mp4)."),
    iterations: int = typer.Option(200, "--iterations", help="Timed calls per stage after warm-up (at least 200)."),
    warmup: int = typer.Option(20, "--warmup", min=0, help="Untimed calls per stage before timing."),
    soak: float = typer.Option(0.0, "--soak", min=0.0, help="Also loop the video for this many MINUTES of video and report RSS at start and end (e.g. 10)."),
    assert_reference: bool = typer.Option(False, "--assert", help="Compare with benchmarks/reference/<target>.json; exit 1 outside +-30 %."),
    skip_rwkv: bool = typer.Option(False, "--skip-rwkv", help="Skip the RWKV-vs-Transformer sweep (PyTorch)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda, for the PyTorch sections only."),
    skip_instructions: bool = typer.Option(False, "--skip-instructions", help="Skip the instructions per coarse frame (callgrind, a few minutes)."),
    cascade_bundle: Optional[Path] = typer.Option(None, "--cascade-bundle", help="A clip-vit-b16 bundle for the cascade section (default: one with random weights, built once when the train and export extras are installed)."),
    no_clip_cascade: bool = typer.Option(False, "--no-clip-cascade", help="Run the cascade section on the shipped bundle only."),
) -> None:
    """Budgets, per-stage latency, end to end and the cascade against always-on, for a target board."""
    from edge_vad.cli.bench_cmd import bench_command

    bench_command(target, json_out, bundle, source, iterations, warmup, soak, assert_reference, skip_rwkv, device,
                  skip_instructions=skip_instructions, cascade_bundle=cascade_bundle, clip_cascade=not no_clip_cascade)


@app.command()
def export(
    checkpoint: str = typer.Option("default", "--checkpoint", help="Trained checkpoint folder, or `default`."),
    targets: str = typer.Option("onnx", "--targets", help="Comma list of onnx, tflite-int8, edgetpu (compiles the int8 models with edgetpu_compiler), tensorrt."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of real frames or videos for int8 calibration and parity."),
    out: Path = typer.Option(..., "--out", help="Bundle folder to write."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle folder."),
    fine_encoder: str = typer.Option("lite0-minilm", "--fine-encoder", help="lite0-minilm or clip-vit-b16."),
    clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help="Local CLIP ViT-B/16 checkpoint (clip-vit-b16)."),
    inline_weights: bool = typer.Option(False, "--inline-weights", help="Copy the backbone's ImageNet weights into the "
                                        "bundle instead of referencing their pip package (a self-contained bundle)."),
) -> None:
    """Export trained checkpoints to a model bundle (ONNX, int8 TFLite; TensorRT engines are built on the device)."""
    from edge_vad.cli.export_cmd import run_export

    run_export(checkpoint, targets, calib, out, force=force, fine_encoder=fine_encoder, clip_checkpoint=clip_checkpoint,
               inline_weights=inline_weights)


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
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="The camera's folder from `edge-vad calibrate` (all inputs are its footage)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
) -> None:
    """Batch-score videos offline; the output feeds `edge-vad eval`."""
    from edge_vad.cli.score_cmd import score as run_score

    counts = run_score(sources, out, bundle=bundle, backend=backend, snippet=snippet, config=config,
                       fine=not no_fine, progress=progress, calibration=calibration, precision=precision)
    typer.echo(f"{out}: {len(counts)} video(s), {sum(counts.values())} frames scored", err=True)


@app.command()
def calibrate(
    source: List[str] = typer.Option(..., "--source", help="Normal footage of the camera: a video, a folder of videos or of images, or a camera URI. Repeat for several."),
    out: Path = typer.Option(..., "--out", help="The camera's calibration folder (pass it to run / score as --calibration)."),
    frames: Optional[int] = typer.Option(None, "--frames", min=1, help="Stop after this many frames in all."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Stop after this many seconds of footage in all (live sources need --frames or --duration)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Model bundle folder (default: the shipped bundle)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Force a backend (see `edge-vad models backends`)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config: its [runtime] and [gate] sections apply."),
    target_per_hour: float = typer.Option(1.0, "--target-per-hour", help="False events per hour of this footage the gate may raise."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Fit a camera's scene model and gate thresholds on its normal footage."""
    from edge_vad.cli.calibrate_cmd import calibrate as run_calibrate

    fields = run_calibrate(source, out, bundle=bundle, backend=backend, frames=frames, duration=duration, config=config,
                           target_per_hour=target_per_hour, progress=progress)
    gate = fields["gate"]
    typer.echo(f"{out}: {fields['frames']} frames ({fields['seconds'] / 60:.1f} min) of {len(fields['sources'])} "
               f"source(s); gate on {gate['on_threshold']:.3f} / off {gate['off_threshold']:.3f}", err=True)


@train_app.command("default")
def train_default(
    data: Path = typer.Option(Path("../shared/data"), "--data", help="Folder holding fight-surv/ and ucsd-ped2/."),
    out: Path = typer.Option(Path("models/default"), "--out", help="Checkpoint folder to write."),
    cache: Path = typer.Option(Path("runs/cache/frames"), "--cache", help="Frame cache: trunk maps, grey inputs (about 3.5 GB)."),
    epochs: int = typer.Option(20, "--epochs", min=1, help="AFED teacher epochs."),
    skip_fine: bool = typer.Option(False, "--skip-fine", help="Train the coarse stage only."),
    no_report: bool = typer.Option(False, "--no-report", help="Only what the checkpoint needs (skips the teacher, baseline, Ped2 and fine-stage cross-validation figures)."),
) -> None:
    """Reproduce the shipped default models from ../shared/data (seeded; cross-validation included)."""
    from edge_vad.cli.train_cmd import train_default as run

    run(data, out, cache, epochs, skip_fine, no_report)


_LIST_HELP = "Feature list: CSV with a `path,label` header, one .npy of features [T, D] per row (UCF/XD labels or class names)."
_VAL_LIST_HELP = "Validation feature list (same format); its figures go to metrics.json in the checkpoint folder."
_ROOT_HELP = "Folder holding the feature files (the published lists carry their authors' absolute paths)."
_PROGRESS_HELP = "Show progress bars."


@train_app.command("coarse")
def train_coarse(
    train_list: Path = typer.Option(..., "--list", help=_LIST_HELP),
    val_list: Optional[Path] = typer.Option(None, "--val-list", help=_VAL_LIST_HELP + " Reports the video AUC."),
    features_root: Optional[Path] = typer.Option(None, "--features-root", help=_ROOT_HELP),
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write (coarse.pt, metrics.json)."),
    epochs: int = typer.Option(20, "--epochs", min=1, help="Teacher epochs."),
    dim: int = typer.Option(64, "--dim", min=1, help="RWKV width of the teacher."),
    lr: float = typer.Option(3e-3, "--lr", min=0.0, help="AdamW learning rate."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Videos per step."),
    max_frames: int = typer.Option(256, "--max-frames", min=1, help="Random crop of snippets per video and step."),
    dropout: float = typer.Option(0.3, "--dropout", min=0.0, max=0.99, help="Dropout after the input projection."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=_PROGRESS_HELP),
) -> None:
    """Train the AFED teacher with MIL on video-level labels from a feature list (e.g. CLIP features of
    XD-Violence / UCF-Crime, or `edge-vad features extract` output). The checkpoint has no backbone: it
    cannot be exported to a device bundle."""
    from edge_vad.cli.train_cmd import train_coarse_list

    train_coarse_list(train_list, val_list, features_root, out, epochs, dim, lr, batch_size, max_frames, dropout,
                      seed, progress)


@train_app.command("distill")
def train_distill(
    checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint folder with the teacher (from `train coarse`); updated in place."),
    train_list: Path = typer.Option(..., "--list", help=_LIST_HELP + " Every 5th row is held out to choose T."),
    val_list: Optional[Path] = typer.Option(None, "--val-list", help=_VAL_LIST_HELP + " Reports the video AUC."),
    features_root: Optional[Path] = typer.Option(None, "--features-root", help=_ROOT_HELP),
    bo_evaluations: int = typer.Option(15, "--bo-evaluations", min=15, help="Bayesian-optimisation evaluations of T."),
    epochs: int = typer.Option(30, "--epochs", min=1, help="Student epochs per evaluation."),
    window: int = typer.Option(15, "--window", min=7, help="Receptive field W of the student (frames)."),
    hidden: int = typer.Option(64, "--hidden", min=1, help="Student channels."),
    lam: float = typer.Option(1.0, "--lambda", min=0.0, help="Weight of the soft (KL) loss."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=_PROGRESS_HELP),
) -> None:
    """Distil the QACM student from the teacher (temperature by Bayesian optimisation) on a feature list."""
    from edge_vad.cli.train_cmd import train_distill_list

    train_distill_list(checkpoint, train_list, val_list, features_root, bo_evaluations, epochs, window, hidden, lam,
                       seed, progress)


@train_app.command("fine")
def train_fine(
    checkpoint: str = typer.Option(..., "--checkpoint", help="Checkpoint folder (from `train coarse`); fine.pt is written there."),
    train_list: Path = typer.Option(..., "--list", help=_LIST_HELP),
    val_list: Optional[Path] = typer.Option(None, "--val-list", help=_VAL_LIST_HELP + " Reports accuracy per class."),
    features_root: Optional[Path] = typer.Option(None, "--features-root", help=_ROOT_HELP),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma list of classes, `normal` first (default: the classes the list's labels name; XD codes map to the paper's 7 classes)."),
    fine_encoder: str = typer.Option("lite0-minilm", "--fine-encoder", help="Text encoder: lite0-minilm (offline MiniLM) or clip-vit-b16."),
    clip_checkpoint: Optional[Path] = typer.Option(None, "--clip-checkpoint", help="Local CLIP ViT-B/16 checkpoint (clip-vit-b16)."),
    epochs: int = typer.Option(30, "--epochs", min=1, help="Fine-stage epochs."),
    n_ctx: int = typer.Option(40, "--n-ctx", min=0, help="Learnable prompt tokens (paper: 40)."),
    hidden: int = typer.Option(256, "--hidden", min=1, help="RWKV width of the video branch."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="AdamW learning rate."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Videos per step."),
    max_frames: int = typer.Option(256, "--max-frames", min=1, help="Random crop of snippets per video and step."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=_PROGRESS_HELP),
) -> None:
    """Train the fine stage (prompt learning + RWKV video head) from a feature list. Feature lists carry no
    per-frame descriptions: every frame uses the generic description (learnable context + class label)."""
    from edge_vad.cli.train_cmd import train_fine_list

    train_fine_list(checkpoint, train_list, val_list, features_root, classes, fine_encoder, clip_checkpoint, epochs,
                    n_ctx, hidden, lr, batch_size, max_frames, seed, progress)


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
def explain_heatmap(
    source: Path = typer.Option(..., "--source", help="Video file or folder of frames."),
    out: Path = typer.Option(..., "--out", help="Folder for overlays/*.jpg, contact_sheet.png, heatmaps.json (and teacher_vs_student.png for class-activation checkpoints)."),
    checkpoint: str = typer.Option("default", "--checkpoint", help="Checkpoint folder (coarse.pt), or `default`."),
    top: int = typer.Option(8, "--top", min=1, help="How many of the highest-scoring frames to show."),
) -> None:
    """Heatmap overlays (the device's heatmap) for the highest-scoring frames, a contact sheet, teacher vs student (Fig. 7)."""
    from edge_vad.cli.explain_cmd import heatmap

    heatmap(source, out, checkpoint, top)


@explain_app.command("pointing")
def explain_pointing(
    frames: List[Path] = typer.Option(..., "--frames", help="Folder of frames named after its mask key (e.g. .../testing/frames/01); repeat for several."),
    masks: Path = typer.Option(..., "--masks", help="Pixel masks .npz (packed bits, UCSD Ped2 test_pixel_masks.npz)."),
    json_out: Path = typer.Option(..., "--json", help="Write the hit rates here (atomically)."),
    checkpoint: str = typer.Option("default", "--checkpoint", help="Checkpoint folder (coarse.pt), or `default`."),
    tolerance: int = typer.Option(0, "--tolerance", min=0, help="Pixels of slack around the mask (0: exactly on it)."),
) -> None:
    """Pointing-game hit rate of the checkpoint's heatmaps (the device's) against pixel masks."""
    from edge_vad.cli.explain_cmd import pointing

    pointing(frames, masks, json_out, checkpoint, tolerance)


@explain_app.command("tsne")
def explain_tsne(
    features_from: str = typer.Option("default", "--features-from", help="Checkpoint folder (coarse.pt + fine.pt), or `default`."),
    out: Path = typer.Option(..., "--out", help="Figure (.png); the numbers go beside it as .json."),
    data: Path = typer.Option(Path("../shared/data"), "--data", help="Folder holding fight-surv/ and ucsd-ped2/."),
    cache: Optional[Path] = typer.Option(Path("runs/cache/frames"), "--cache", help="Frame cache of `edge-vad train default` (trunk maps; videos not in it are computed)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use at most N held-out videos (evenly spread)."),
    seed: int = typer.Option(0, "--seed", help="t-SNE random state."),
    fold: Optional[int] = typer.Option(None, "--fold", min=0, help="Videos held out by this cross-validation fold (default: every fold's, each video once)."),
) -> None:
    """t-SNE of fine video features and class text embeddings (paper Fig. 8), on the folds' held-out videos."""
    from edge_vad.cli.explain_cmd import tsne

    tsne(features_from, out, data, cache, limit, seed, fold)


@explain_app.command("lime")
def explain_lime(
    videos: Optional[int] = typer.Option(None, "--videos", min=1, help="Number of held-out videos (evenly spread; default all)."),
    json_out: Path = typer.Option(..., "--json", help="Write the R^2 figures and the method here (atomically)."),
    checkpoint: str = typer.Option("default", "--checkpoint", help="Checkpoint folder (coarse.pt, fine.pt), or `default`."),
    data: Path = typer.Option(Path("../shared/data"), "--data", help="Folder holding fight-surv/ and ucsd-ped2/."),
    cache: Optional[Path] = typer.Option(Path("runs/cache/frames"), "--cache", help="Frame cache of `edge-vad train default` (trunk maps)."),
    segments: int = typer.Option(8, "--segments", min=2, help="Temporal segments per video (the surrogate's features)."),
    samples: int = typer.Option(256, "--samples", min=4, help="Perturbed copies per video."),
    fill: str = typer.Option("mean", "--fill", help="Switched-off segments become the video's mean feature (`mean`) or `zeros`."),
    seed: int = typer.Option(0, "--seed", help="Random state of the masks."),
    fold: Optional[int] = typer.Option(None, "--fold", min=0, help="Videos held out by this cross-validation fold (default: every fold's, each video once)."),
) -> None:
    """LIME-style surrogate R^2 for the coarse and the fine stage (paper Table IX), on the folds' held-out videos."""
    from edge_vad.cli.explain_cmd import lime

    lime(videos, json_out, checkpoint, data, cache, segments, samples, fill, seed, fold)


@models_app.command("info")
def models_info(
    target: Optional[str] = typer.Argument(None, help="A bundle folder (`default`: the shipped one); omit for the "
                                           "PyTorch networks."),
) -> None:
    """Parameters, FLOPs and sizes per network or per bundle artifact."""
    from edge_vad.cli.models_cmd import info

    info(target)


@models_app.command("verify")
def models_verify(bundle: str = typer.Argument(..., help="Bundle folder, or `default` for the shipped bundle.")) -> None:
    """Re-check the bundle's sha256 hashes and print the manifest summary."""
    from edge_vad.cli.models_cmd import verify

    verify(bundle)


@models_app.command("compile-edgetpu")
def models_compile_edgetpu(
    bundle: str = typer.Argument(..., help="Bundle folder with int8 TFLite models, or `default` for the shipped one."),
    out: Path = typer.Option(..., "--out", help="New bundle folder to write (the input stays as it is)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
    min_runtime: Optional[int] = typer.Option(None, "--min-runtime", min=10, help="Oldest Edge TPU runtime the models "
                                              "must run on (edgetpu_compiler --min_runtime_version; default: the "
                                              "compiler's own)."),
) -> None:
    """Compile the bundle's int8 models for the Coral Edge TPU with Google's edgetpu_compiler (x86-64 Debian/Ubuntu)."""
    from edge_vad.cli.compile_cmd import compile_edgetpu

    compile_edgetpu(bundle, out, force=force, min_runtime_version=min_runtime)


@models_app.command("build-engines")
def models_build_engines(
    bundle: Optional[Path] = typer.Argument(None, help="Bundle folder (default: the config's, else the shipped one)."),
    precision: Optional[str] = typer.Option(None, "--precision", help=PRECISION_HELP),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config: its runtime bundle and precision settings apply."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Build even where the cache has an engine."),
) -> None:
    """Build, check and cache every TensorRT engine of a bundle ahead of the first start (deploy/install.sh)."""
    from edge_vad.cli.engines_cmd import build_engines

    build_engines(bundle, precision, config, rebuild)


@models_app.command("backends")
def models_backends() -> None:
    """Which runtime backends are available here, and what is missing for the others."""
    from edge_vad.cli.backends_cmd import list_backends

    raise typer.Exit(list_backends())
