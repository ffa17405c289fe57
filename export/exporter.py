"""`edge-vad export`: trained checkpoints -> a verified model bundle (DESIGN.md conventions 2 and 6).

Order of work:
1. `plan_export` checks every option before anything heavy runs (no torch needed): targets, calibration
   folder, output folder, fine encoder, CLIP checkpoint, and whether the int8 toolchain is installed.
2. `export_bundle` writes every artifact into a temporary folder (edge_vad_export.bundle_writer): ONNX graphs
   (always: they are the reference graphs, the TensorRT input and what the budgets are counted on), parity
   checks against PyTorch (a failed check fails the export), budgets, optionally int8 TFLite through the
   tflite-int8 hook, the constant text table; then the manifest, validated by the runtime's own schema, and
   one rename into place.

The tflite-int8 target is an optional hook: it works where `edge_vad_export.tflite_int8` imports and
litert_torch, ai_edge_quantizer and ai_edge_litert are installed (the `export` extra); elsewhere asking for
it is a MissingDependency naming that extra. TensorRT engines are never built here: they are specific to the
device's GPU and TensorRT version, so the bundle records the ONNX and the build settings and the device builds
and caches the engine (edge_vad.backends.tensorrt_backend).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import importlib.metadata
import importlib.util
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edge_vad.bundle.manifest import FORMAT_VERSION
from edge_vad.constants import CLIP_FRAMES_PER_SNIPPET, SNIPPET_FRAMES
from edge_vad.errors import EdgeVadError, MissingDependency
from edge_vad.head_input import head_inputs

log = logging.getLogger(__name__)

VALID_TARGETS = ("onnx", "tflite-int8", "tensorrt")
FINE_ENCODERS = ("lite0-minilm", "clip-vit-b16")
TFLITE_MODULES = ("litert_torch", "ai_edge_quantizer", "ai_edge_litert")
EXPORT_EXTRA_HINT = "pip install 'edge-vad[export]' (litert-torch, ai-edge-quantizer, ai-edge-litert)"
TRAIN_EXTRA_HINT = "pip install 'edge-vad[train]' (after torch==2.13.0, see README)"
INT8_NEEDS_CALIB = "int8 export needs calibration frames: pass --calib DIR (a folder of real frames or videos)"

PARITY_FRAMES = 8  # fp32 parity frames: 8 x ~0.3 s of eager Lite0 on one CPU thread
CALIBRATION_FRAMES = 64  # int8 calibration (TFLite and TensorRT): DESIGN.md "calibrate on about 64 real frames"
INT8_PARITY_FRAMES = 16  # held-out frames (other positions in the clips) for the int8 cosine check
VALIDATION_CLIPS_PER_LABEL = 32  # labelled clips per class for the int8 AUC agreement check (at most)
# At least this many per class, or the check is not run: with n0 x n1 clip pairs one swapped pair moves the AUC by
# 1 / (n0 n1), which must not alone exceed the 0.01 tolerance (10 x 10 pairs: exactly 0.01).
MIN_VALIDATION_CLIPS_PER_LABEL = 10
VALIDATION_FRAMES_PER_CLIP = 16  # evenly spaced frames scored per validation clip
QACM_PARITY_WINDOWS = 16  # QACM windows compared ONNX vs PyTorch
# Where in each clip the frame sets are taken (fractions of the spacing), so they never share a frame.
CALIB_OFFSET, PARITY_OFFSET, INT8_PARITY_OFFSET = 0.25, 0.5, 0.75

# Files inside a bundle (artifact name -> file)
FILES = {
    "coarse_backbone": "coarse_backbone.onnx",
    "qacm": "qacm.onnx",
    "teacher_step": "teacher_step.onnx",
    "fine_head": "fine_head.onnx",
    "clip_visual": "clip_visual.onnx",
    "text_table": "text_table.npy",
    "description_embeddings": "description_embeddings.npy",
    "coarse_backbone_int8": "coarse_backbone_int8.tflite",
    "qacm_int8": "qacm_int8.tflite",
    "tensorrt_calibration": "tensorrt_calibration.npy",
}
# the external-data file name the backbone graph refers to for its package weights (never in the bundle)
PACKAGE_WEIGHTS_FILE = "coarse_backbone.package-weights.bin"


# --------------------------------------------------------------------------------------------------------
# 1. Options (no torch)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportPlan:
    checkpoint: str
    targets: tuple[str, ...]
    calib: Optional[Path]
    out: Path
    force: bool
    fine_encoder: str
    clip_checkpoint: Optional[Path]
    inline_weights: bool = False  # copy the backbone's package weights into the bundle (self-contained)

    @property
    def int8(self) -> bool:
        return "tflite-int8" in self.targets

    @property
    def tensorrt_precision(self) -> str:
        """int8 engines need calibration frames; without --calib the device builds fp16."""
        return "int8" if self.calib is not None else "fp16"

    def notes(self) -> list[str]:
        """What the export tells the user about its plan before it starts."""
        out = []
        if "onnx" not in self.targets:
            out.append("ONNX graphs are always part of a bundle (reference graphs, TensorRT input, budget counts)")
        if "tensorrt" in self.targets:
            out.append(f"TensorRT engines are built on the device from the bundle's ONNX; the bundle records the "
                       f"build settings (precision {self.tensorrt_precision}"
                       + (f", {CALIBRATION_FRAMES} calibration frames" if self.calib is not None else
                          "; pass --calib DIR for int8") + ")")
        return out


def parse_targets(text: str) -> tuple[str, ...]:
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if not names:
        raise EdgeVadError(f"--targets is empty; pass a comma list of: {', '.join(VALID_TARGETS)}")
    unknown = [n for n in names if n not in VALID_TARGETS]
    if unknown:
        raise EdgeVadError(f"unknown export target(s) {', '.join(unknown)}; valid targets: {', '.join(VALID_TARGETS)}")
    return tuple(dict.fromkeys(names))  # de-duplicated, order kept


def tflite_hook_missing() -> Optional[str]:
    """None where the tflite-int8 target can run; else what is missing."""
    missing = [m for m in TFLITE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    try:
        importlib.import_module("edge_vad_export.tflite_int8")
    except ImportError as exc:
        return f"edge_vad_export.tflite_int8 does not import ({exc})"
    return None


def plan_export(checkpoint: str, targets: str, calib: Optional[Path], out: Optional[Path], force: bool = False,
                fine_encoder: str = "lite0-minilm", clip_checkpoint: Optional[Path] = None,
                inline_weights: bool = False) -> ExportPlan:
    """Check every option; one EdgeVadError line for the first problem. Runs no network code."""
    from edge_vad_export.bundle_writer import check_out_dir

    names = parse_targets(targets)
    if out is None:
        raise EdgeVadError("--out is required: the bundle folder to write")
    if calib is not None and not Path(calib).is_dir():
        raise EdgeVadError(f"--calib {calib} is not a folder; pass a folder of real frames or videos")
    if "tflite-int8" in names and calib is None:
        raise EdgeVadError(INT8_NEEDS_CALIB)
    if fine_encoder not in FINE_ENCODERS:
        raise EdgeVadError(f"unknown --fine-encoder {fine_encoder!r}; choose one of: {', '.join(FINE_ENCODERS)}")
    if fine_encoder == "clip-vit-b16":
        if clip_checkpoint is None:
            raise EdgeVadError("--fine-encoder clip-vit-b16 needs --clip-checkpoint PATH (CLIP weights are never "
                               "downloaded); or use --fine-encoder lite0-minilm")
        if not Path(clip_checkpoint).is_file():
            raise EdgeVadError(f"--clip-checkpoint {clip_checkpoint} is not a file; pass the CLIP ViT-B/16 weights file")
    elif clip_checkpoint is not None:
        raise EdgeVadError("--clip-checkpoint is only used with --fine-encoder clip-vit-b16; drop it or switch encoder")
    check_out_dir(Path(out), force)
    if "tflite-int8" in names:
        missing = tflite_hook_missing()
        if missing:
            raise MissingDependency(f"the tflite-int8 target needs the export extra ({missing}); install it with: "
                                    f"{EXPORT_EXTRA_HINT}")
    return ExportPlan(str(checkpoint), names, Path(calib) if calib is not None else None, Path(out), bool(force),
                      fine_encoder, Path(clip_checkpoint) if clip_checkpoint is not None else None,
                      bool(inline_weights))


# --------------------------------------------------------------------------------------------------------
# 2. Sources: the checkpoint's networks
# --------------------------------------------------------------------------------------------------------


@dataclass
class FineSource:
    """Everything the fine stage's artifacts are made from.

    stage: a FineStage with its text side frozen (stage.text_table [C, K, D]).
    image_input: which per-frame feature feeds the head: trunk_feature | feature | both (lite0-minilm, from
        the coarse backbone) or clip_visual (clip-vit-b16, from `clip_image`).
    vocabulary: description id -> word (ImageNet class names: id == ImageNet class id for lite0-minilm).
    vocabulary_to_row: description id -> text-table row (ids unseen in training -> fallback_row).
    description_embeddings: clip-vit-b16 only, [V, E] CLIP text embeddings of the zero-shot captions.
    """

    stage: Any
    encoder: str
    image_input: str
    vocabulary: list[str]
    vocabulary_to_row: list[int]
    fallback_row: Optional[int] = None
    clip_image: Any = None
    description_embeddings: Optional[np.ndarray] = None
    description_template: Optional[str] = None
    sha256: dict[str, Optional[str]] = field(default_factory=dict)


def image_input_for(feature_dim: int, backbone: Any) -> str:
    """lite0-minilm: which coarse-backbone output the fine stage was trained on, from its width."""
    trunk, branch = backbone.spec.trunk_channels, backbone.branch_channels
    by_dim = {trunk: "trunk_feature", branch: "feature", trunk + branch: "both"}
    if feature_dim not in by_dim:
        raise EdgeVadError(f"fine stage expects {feature_dim}-d frame features, but the coarse backbone gives "
                           f"{trunk} (trunk), {branch} (branch) or {trunk + branch} (both); train both on one backbone")
    return by_dim[feature_dim]


def load_fine_source(folder: Path, plan: ExportPlan, backbone: Any) -> Optional[FineSource]:
    """The ONE place that reads fine.pt (edge_vad_models.training.fine.load_fine). None: no fine.pt."""
    from edge_vad_models.backbones import sha256_file
    from edge_vad_models.checkpoint import FINE_FILE
    from edge_vad_models.imagenet import imagenet_class_names
    from edge_vad_models.training.fine import load_fine

    path = Path(folder) / FINE_FILE
    if not path.is_file():
        return None
    stage, meta = load_fine(folder)
    encoder = meta.get("config", {}).get("encoder", "lite0-minilm")
    if encoder != plan.fine_encoder:
        raise EdgeVadError(f"{path} was trained with fine encoder {encoder}; pass --fine-encoder {encoder}")
    words = imagenet_class_names()
    if int(meta["vocabulary_size"]) != len(words):
        raise EdgeVadError(f"{path}: its description vocabulary has {meta['vocabulary_size']} ids, not ImageNet's "
                           f"{len(words)}; this exporter maps descriptions through ImageNet class ids")
    source = FineSource(stage=stage, encoder=encoder, image_input="", vocabulary=words,
                        vocabulary_to_row=[int(r) for r in meta["description_rows"]],
                        fallback_row=meta.get("fallback_row"), sha256={FINE_FILE: sha256_file(path)})
    if encoder == "clip-vit-b16":
        from edge_vad_models.fine.clip_vit_b16 import build_clip_encoders
        from edge_vad_models.fine.descriptions import ClipDescriber, DescriptionVocabulary

        encoders = build_clip_encoders(plan.clip_checkpoint)
        describer = ClipDescriber(encoders.text, DescriptionVocabulary(tuple(words)))
        source.clip_image = encoders.image
        source.image_input = "clip_visual"
        source.description_embeddings = describer.vocabulary_embeddings.numpy().astype(np.float32)
        source.description_template = describer.template
        source.sha256["clip_checkpoint"] = sha256_file(plan.clip_checkpoint)
    else:
        source.image_input = image_input_for(stage.feature_dim, backbone)
    return source


# --------------------------------------------------------------------------------------------------------
# 3. Export
# --------------------------------------------------------------------------------------------------------


class _Progress:
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


def _resize_cover_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """CLIP's pixel path: shorter side to `size` (bicubic), centre crop size x size."""
    import cv2

    h, w = frame.shape[:2]
    scale = size / min(h, w)
    resized = cv2.resize(frame, (max(size, round(w * scale)), max(size, round(h * scale))), interpolation=cv2.INTER_CUBIC)
    top = (resized.shape[0] - size) // 2
    left = (resized.shape[1] - size) // 2
    return resized[top:top + size, left:left + size]


def clip_pixels(frame_bgr: np.ndarray, size: int) -> np.ndarray:
    """uint8 BGR frame -> CLIP input [1, 3, size, size] float32 (RGB, CLIP mean / std)."""
    from edge_vad.constants import CLIP_MEAN, CLIP_STD

    rgb = _resize_cover_crop(frame_bgr, size)[..., ::-1].astype(np.float32) / 255.0
    x = (rgb - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def resized_rgb(frame_bgr: np.ndarray, preprocess: Any) -> np.ndarray:
    """uint8 BGR frame -> uint8 RGB [size, size, 3] resized as `preprocess` says (TensorRT calibration data)."""
    import cv2

    interp = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}[preprocess.interpolation]
    img = cv2.resize(frame_bgr, (preprocess.size, preprocess.size), interpolation=interp)
    return np.ascontiguousarray(img[..., ::-1] if preprocess.pixel_format == "RGB" else img)


def _io_entries(values: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("name", "shape", "dtype", "layout", "scale", "zero_point")
    return [{k: v[k] for k in keep if k in v and v[k] is not None} for v in values]


@dataclass
class _Work:
    """What one export run accumulates."""

    plan: ExportPlan
    writer: Any
    progress: _Progress
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # artifact -> budgets entry
    backbone_runner: Any = None  # onnxruntime session of the fp32 backbone (int8 checks), made on first use
    backbone_onnx: Optional[Path] = None  # the loadable fp32 backbone (with its package weights laid out)
    scratch: Optional[Path] = None  # a temporary folder for this run (deleted at its end)
    head_input: str = "feature"  # the checkpoint's head input (edge_vad.head_input)


def _onnx_artifact(work: _Work, name: str, stage: str, graph: Any, parity: dict[str, dict[str, Any]],
                   **fields: Any) -> None:
    from edge_vad_export.budgets import artifact_budgets
    from edge_vad_export.parity import require_passed

    require_passed(FILES[name], parity)
    package = fields.get("package_weights")
    budgets = artifact_budgets(graph.path, graph.path, "onnx", package_bytes=package["bytes"] if package else 0)
    work.counts[name] = budgets
    work.writer.add(name, FILES[name], stage, "onnx", "fp32", inputs=_io_entries(graph.inputs),
                    outputs=_io_entries(graph.outputs), parity=parity, budgets=budgets,
                    conversion=graph.conversion(), **fields)
    work.progress.done(name, graph.path, parity)


NO_BACKBONE = ("this checkpoint was trained on precomputed features (no backbone); export needs a backbone "
               "checkpoint from `edge-vad train default`")


def _require_backbone(coarse: Any) -> None:
    """A feature-list checkpoint (`edge-vad train coarse --list`) has no network that makes its features."""
    if getattr(coarse, "backbone", None) is None:
        raise EdgeVadError(NO_BACKBONE)


def export_bundle(plan: ExportPlan, coarse: Any = None, fine: Optional[FineSource] = None,
                  console: Any = None, read_fine: bool = True) -> Any:
    """Write the bundle `plan` describes; returns the validated edge_vad.bundle.Manifest.

    coarse: a CoarseCheckpoint (default: load_coarse(plan.checkpoint)). fine: a FineSource (default: read from
    the checkpoint folder's fine.pt when `read_fine`; a bundle without fine stage when there is none).
    """
    try:
        import torch
    except ImportError:
        raise MissingDependency(f"export needs PyTorch; install it with: {TRAIN_EXTRA_HINT}") from None
    from edge_vad_export import onnx_export as ox
    from edge_vad_export import parity as px
    from edge_vad_export.budgets import pipeline_budgets
    from edge_vad_export.bundle_writer import BundleWriter
    from edge_vad_models.checkpoint import COARSE_FILE, load_coarse, resolve_checkpoint_dir

    progress = _Progress(console)
    for note in plan.notes():
        progress.warn(note)
    sources: dict[str, Optional[str]] = {}
    if coarse is None:
        folder = resolve_checkpoint_dir(plan.checkpoint)
        progress.step(f"loading {folder}")
        coarse = load_coarse(folder)
        _require_backbone(coarse)
        from edge_vad_models.backbones import sha256_file

        sources[COARSE_FILE] = sha256_file(folder / COARSE_FILE)
        if fine is None and read_fine:
            fine = load_fine_source(folder, plan, coarse.backbone)
            if fine is None:
                progress.warn(f"no fine.pt in {folder}: the bundle has the coarse stage only")
    if fine is not None:
        sources.update(fine.sha256)
    _require_backbone(coarse)
    backbone, teacher, student = coarse.backbone.eval(), coarse.teacher.eval(), coarse.student
    sources["backbone_weights"] = backbone.weights_sha256()

    if plan.calib is not None:
        frames = px.collect_frames(plan.calib, PARITY_FRAMES, offset=PARITY_OFFSET)
        frames_note = f"real frames from {plan.calib.name}/"  # the folder's name: no local paths in a bundle
    else:
        frames = px.synthetic_frames(PARITY_FRAMES)
        frames_note = "synthetic frames (no --calib given)"
        progress.warn("parity runs on synthetic frames; pass --calib DIR to check on real frames")

    with BundleWriter(plan.out, plan.force) as writer, tempfile.TemporaryDirectory(prefix="edge-vad-export-") as scratch:
        work = _Work(plan, writer, progress, head_input=coarse.head_input, scratch=Path(scratch))
        # -- coarse backbone --------------------------------------------------------------------------------
        progress.step("coarse backbone -> ONNX")
        graph = ox.export_coarse_backbone(backbone, writer.path(FILES["coarse_backbone"]))
        package_weights = _package_weights(work, backbone, graph.path)
        images = [backbone.preprocess_bgr(f).numpy() for f in frames]
        # parity runs on the graph as the device loads it: package weights laid out by the runtime's own code
        checks, ref = px.onnx_vs_torch(backbone, work.backbone_onnx, [{"image": x} for x in images], what=frames_note)
        _onnx_artifact(work, "coarse_backbone", "coarse_backbone", graph, checks, package_weights=package_weights)
        real_features = ref["feature"][:, 0]  # [N, D] pooled F_A; the heads read head_inputs() of a stream of them

        # -- QACM student -----------------------------------------------------------------------------------
        if student is not None:
            student = student.eval()
            progress.step(f"QACM student (W = {student.window}) -> ONNX")
            graph = ox.export_qacm(student, writer.path(FILES["qacm"]))
            seq = head_inputs(px.feature_sequence(real_features, QACM_PARITY_WINDOWS + student.window,
                                                  backbone.branch_channels), coarse.head_input)
            windows = px.qacm_windows(seq, student.window)[-QACM_PARITY_WINDOWS:]
            checks, _ = px.onnx_vs_torch(ox.QacmWindow(student), graph.path, [{"features": w[None]} for w in windows],
                                         what="feature windows (backbone features of the parity frames, 10% noise)")
            _onnx_artifact(work, "qacm", "coarse_head", graph, checks, window=int(student.window))
        else:
            progress.warn("the checkpoint has no QACM student: the bundle's coarse head is missing")

        # -- AFED teacher, single step ----------------------------------------------------------------------
        progress.step(f"AFED teacher step -> ONNX (parity over {px.RECURRENT_STEPS} steps)")
        graph = ox.export_teacher_step(teacher, writer.path(FILES["teacher_step"]))
        seq = head_inputs(px.feature_sequence(real_features, px.RECURRENT_STEPS, backbone.branch_channels),
                          coarse.head_input)
        check = px.recurrent_parity(graph.path, seq, teacher.init_state(1).numpy(),
                                    lambda s: teacher(torch.from_numpy(s)).detach().numpy(), "feature", "logit",
                                    what="teacher logit")
        _onnx_artifact(work, "teacher_step", "coarse_teacher", graph, {"logit_recurrent_vs_parallel": check},
                       recurrent_state=ox.rwkv_state_info(teacher.rwkv))

        # -- fine stage --------------------------------------------------------------------------------------
        fine_fields: dict[str, Any] = {}
        if fine is not None:
            fine_fields = _export_fine(work, fine, backbone, frames, frames_note, ref)

        # -- int8 TFLite (optional hook) ---------------------------------------------------------------------
        int8_tools: dict[str, str] = {}
        if plan.int8:
            int8_tools = _export_int8(work, backbone, student)

        # -- TensorRT build settings --------------------------------------------------------------------------
        if "tensorrt" in plan.targets and plan.calib is not None:
            calib = px.collect_frames(plan.calib, CALIBRATION_FRAMES, offset=CALIB_OFFSET)
            data = np.stack([resized_rgb(f, backbone.preprocess) for f in calib])
            ox.save_npy(data, writer.path(FILES["tensorrt_calibration"]))
            writer.add("tensorrt_calibration", FILES["tensorrt_calibration"], "calibration", "npy", "uint8",
                       shape=list(data.shape), layout="[frames, size, size, 3] uint8 RGB, resized as `preprocessing`; "
                       "normalise with its mean / std (and NHWC -> NCHW) before feeding",
                       conversion={"frames": len(calib), "source": f"{plan.calib.name}/"})

        manifest_fields = _manifest_fields(work, coarse, fine, fine_fields, sources, int8_tools,
                                           pipeline_budgets)
        progress.step(f"writing {plan.out}")
        manifest = writer.finish(manifest_fields)
    progress.step(f"[green]bundle written[/green]: {plan.out} ({len(manifest.artifacts)} artifacts)")
    return manifest


def _export_fine(work: _Work, fine: FineSource, backbone: Any, frames: list[np.ndarray], frames_note: str,
                 backbone_ref: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    from edge_vad_export import onnx_export as ox
    from edge_vad_export import parity as px

    stage = fine.stage.eval()
    if not stage.text_frozen:
        raise EdgeVadError("the fine stage's text side is not frozen (no text table); export a trained fine.pt")
    writer, progress = work.writer, work.progress
    fields: dict[str, Any] = {}
    if fine.image_input == "clip_visual":
        if fine.clip_image is None:
            raise EdgeVadError("clip-vit-b16 fine stage without its CLIP image encoder; pass --clip-checkpoint")
        size = int(fine.clip_image.image_size)
        progress.step(f"CLIP image tower ({size}x{size}) -> ONNX")
        graph = ox.export_clip_visual(fine.clip_image, writer.path(FILES["clip_visual"]))
        pixels = [clip_pixels(f, size) for f in frames]
        checks, ref = px.onnx_vs_torch(ox.ClipVisual(fine.clip_image), graph.path, [{"image": x} for x in pixels],
                                       what=frames_note)
        _onnx_artifact(work, "clip_visual", "fine_image", graph, checks)
        real = ref["embedding"][:, 0]
        from edge_vad.constants import CLIP_MEAN, CLIP_STD

        fields["preprocessing"] = {"size": size, "mean": list(CLIP_MEAN), "std": list(CLIP_STD), "pixel_format": "RGB",
                                   "resize": "shorter side to size, cv2.INTER_CUBIC, centre crop", "interpolation": "cubic",
                                   "layout": "NCHW"}
    else:
        parts = {"trunk_feature": [backbone_ref["trunk_feature"][:, 0]], "feature": [backbone_ref["feature"][:, 0]]}
        parts["both"] = parts["trunk_feature"] + parts["feature"]
        real = np.concatenate(parts[fine.image_input], axis=-1)
    if real.shape[-1] != stage.feature_dim:
        raise EdgeVadError(f"fine stage expects {stage.feature_dim}-d features, its image input "
                           f"{fine.image_input} gives {real.shape[-1]}")

    progress.step(f"fine head (one RWKV step) -> ONNX (parity over {px.RECURRENT_STEPS} steps)")
    head = ox.FineHeadStep.from_stage(stage)
    graph = ox.export_fine_head(head, writer.path(FILES["fine_head"]))
    seq = px.feature_sequence(real, px.RECURRENT_STEPS, stage.feature_dim)
    check = px.recurrent_parity(graph.path, seq, stage.rwkv.init_state(1).numpy(),
                                lambda s: stage.video_features(torch.from_numpy(s)).detach().numpy(),
                                "frame_feature", "video_feature", what="video feature")
    _onnx_artifact(work, "fine_head", "fine_head", graph, {"video_feature_recurrent_vs_parallel": check},
                   recurrent_state=ox.rwkv_state_info(stage.rwkv))

    table = stage.text_table.detach().float().cpu().numpy().astype(np.float32)
    ox.save_npy(table, writer.path(FILES["text_table"]))
    writer.add("text_table", FILES["text_table"], "text_table", "npy", "fp32", shape=list(table.shape),
               layout="[classes, descriptions, dim], L2-normalised rows")
    if fine.description_embeddings is not None:
        emb = np.asarray(fine.description_embeddings, np.float32)
        ox.save_npy(emb, writer.path(FILES["description_embeddings"]))
        writer.add("description_embeddings", FILES["description_embeddings"], "text_table", "npy", "fp32",
                   shape=list(emb.shape), layout="[vocabulary, dim], L2-normalised CLIP text embeddings of the "
                   "zero-shot captions; description id = argmax cosine with the frame's CLIP embedding")
    return fields


# -- int8 (tflite hook) -------------------------------------------------------------------------------------------


def _int8_modules(backbone: Any, student: Any) -> tuple[Any, Any]:
    """Edge-TPU-friendly forms of the coarse networks, same arithmetic (parity checks prove it):
    means over an NHWC view (an NCHW mean leaves TRANSPOSE ops) and the QACM's (1, k) convolutions with
    dilation (d, d) instead of (1, d) (identical for height 1; the Edge TPU wants equal dilations)."""
    import copy

    import torch
    from torch import nn

    class Backbone(nn.Module):
        def __init__(self, net: Any):
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
            trunk = self.net.trunk(image)
            f_a = self.net.branch(trunk)
            trunk_feature = trunk.permute(0, 2, 3, 1).mean(dim=(1, 2))
            return {"feature": f_a.permute(0, 2, 3, 1).mean(dim=(1, 2)), "heatmap": f_a,
                    "imagenet_logits": self.net.classifier(trunk_feature), "trunk_feature": trunk_feature}

    class Qacm(nn.Module):
        def __init__(self, net: nn.Sequential):
            super().__init__()
            layers = []
            for layer in net:
                if isinstance(layer, nn.Conv2d) and layer.dilation[0] != layer.dilation[1]:
                    assert layer.kernel_size[0] == 1, "only (1, k) temporal convolutions are re-dilated"
                    d = layer.dilation[1]
                    new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, dilation=(d, d),
                                    bias=layer.bias is not None)
                    new.load_state_dict(layer.state_dict())
                    layer = new
                layers.append(copy.deepcopy(layer))
            self.net = nn.Sequential(*layers)

        def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:  # [1, D, 1, W] -> [1, 1]
            return {"logit": self.net(features).reshape(1, 1)}

    return Backbone(backbone).eval(), (Qacm(student.net).eval() if student is not None else None)


def _export_int8(work: _Work, backbone: Any, student: Any) -> dict[str, str]:
    import torch

    from edge_vad_export import parity as px

    hook = importlib.import_module("edge_vad_export.tflite_int8")
    plan, writer, progress = work.plan, work.writer, work.progress
    assert plan.calib is not None
    calib = px.collect_frames(plan.calib, CALIBRATION_FRAMES, offset=CALIB_OFFSET)
    held_out = px.collect_frames(plan.calib, INT8_PARITY_FRAMES, offset=INT8_PARITY_OFFSET)
    nchw = np.concatenate([backbone.preprocess_bgr(f).numpy() for f in calib])
    bb_module, qacm_module = _int8_modules(backbone, student)

    progress.step(f"coarse backbone -> full-int8 TFLite ({len(calib)} calibration frames)")
    path = writer.path(FILES["coarse_backbone_int8"])
    size = backbone.preprocess.size
    report = hook.convert_full_int8(bb_module, torch.zeros(1, 3, size, size), [nchw], path, input_name="image")
    runner = hook.TfliteRunner(path)
    held = [backbone.preprocess_bgr(f).numpy() for f in held_out]
    fp32 = px.torch_outputs_many(bb_module, held)
    int8 = {k: np.concatenate([runner.run(image=x.transpose(0, 2, 3, 1))[k] for x in held]) for k in fp32}
    checks = px.int8_feature_checks(fp32, int8, ["feature", "trunk_feature"])
    _tflite_artifact(work, "coarse_backbone_int8", "coarse_backbone", report, checks, "coarse_backbone")

    if qacm_module is not None:
        progress.step("QACM student -> full-int8 TFLite")
        features = head_inputs(np.concatenate([_ort_backbone(work, x)["feature"] for x in nchw[:, None]]),
                               work.head_input)
        windows = px.qacm_windows(features, student.window)  # [N, W, D]
        calib_q = windows.transpose(0, 2, 1)[:, :, None, :]  # [N, D, 1, W] NCHW
        qpath = writer.path(FILES["qacm_int8"])
        qreport = hook.convert_full_int8(qacm_module, torch.zeros(1, student.in_dim, 1, student.window), [calib_q],
                                         qpath, input_name="features")
        qchecks = _auc_check(work, backbone, runner, hook.TfliteRunner(qpath), student)
        _tflite_artifact(work, "qacm_int8", "coarse_head", qreport, qchecks, "qacm", window=int(student.window))
    return {k: v for k, v in hook.tool_versions().items() if k not in ("torch", "numpy")}


def _heatmap_fields(coarse: Any) -> dict[str, Any]:
    """The deployed head's channel weights for the device's heatmap (the student; the teacher without one)."""
    from edge_vad_models.explain.heatmaps import WEIGHT_RULES, channel_weights

    head = "student" if coarse.student is not None else "teacher"
    weights = channel_weights(coarse, head)
    return {"heatmap_weights": [round(float(w), 7) for w in weights],
            "heatmap_rule": f"relu(sum_c w_c F_A[c]), w = {head}: {WEIGHT_RULES[head]}"}


def _package_weights(work: _Work, backbone: Any, graph: Path) -> Optional[dict[str, Any]]:
    """Leave the backbone's pip-package weights out of the graph (unless --inline-weights); the manifest record.

    Sets work.backbone_onnx to a loadable copy: the graph itself, or graph + laid-out weights in scratch."""
    from edge_vad.bundle.manifest import PackageWeights
    from edge_vad.bundle.package_weights import materialise
    from edge_vad.fileio import sha256_file
    from edge_vad_export.package_weights import externalise, find_package_file

    work.backbone_onnx = graph
    weights = getattr(backbone, "weights_path", None)
    source = find_package_file(weights) if weights is not None and not work.plan.inline_weights else None
    if source is None:
        return None
    record = externalise(graph, source, PACKAGE_WEIGHTS_FILE)
    if record is None:
        return None
    assert work.scratch is not None
    work.backbone_onnx = materialise(graph, sha256_file(graph), PackageWeights(**record), work.scratch)
    work.progress.note(f"{graph.name}: {record['bytes'] / 1e6:.1f} MB of weights stay in pip package "
                       f"{source.package} {source.version} ({len(record['keys'])} tensors); the device lays them out")
    return record


def _ort_backbone(work: _Work, x: np.ndarray) -> dict[str, np.ndarray]:
    from edge_vad_export.parity import OrtRunner

    if work.backbone_runner is None:
        work.backbone_runner = OrtRunner(work.backbone_onnx)
    return work.backbone_runner.run({"image": x})


def _auc_check(work: _Work, backbone: Any, bb_int8: Any, qacm_int8: Any, student: Any) -> dict[str, dict[str, Any]]:
    """Coarse clip-score AUC, int8 (TFLite backbone + QACM) vs fp32 (ONNX), on labelled clips under --calib."""
    from edge_vad_export import parity as px

    clips = px.labelled_clips(work.plan.calib)
    by_label = {lab: [c for c in clips if c[1] == lab] for lab in (0, 1)}
    if min(len(by_label[0]), len(by_label[1])) < MIN_VALIDATION_CLIPS_PER_LABEL:
        work.progress.warn(f"int8 AUC check not run: it needs >= {MIN_VALIDATION_CLIPS_PER_LABEL} clips in each of a "
                           f"normal and an anomaly sub-folder of --calib (e.g. noFight/ and fight/); found "
                           f"{len(by_label[0])} normal, {len(by_label[1])} anomalous")
        return {}
    chosen = []
    for lab, items in by_label.items():
        step = max(1, len(items) // VALIDATION_CLIPS_PER_LABEL)
        chosen += items[::step][:VALIDATION_CLIPS_PER_LABEL]
    qacm32 = px.OrtRunner(work.writer.path(FILES["qacm"]))
    labels, s32, s8 = [], [], []
    for path, label in chosen:
        frames = px.clip_frames(path, VALIDATION_FRAMES_PER_CLIP)
        if not frames:
            continue
        xs = [backbone.preprocess_bgr(f).numpy() for f in frames]
        f32 = head_inputs(np.concatenate([_ort_backbone(work, x)["feature"] for x in xs]), work.head_input)
        f8 = head_inputs(np.concatenate([bb_int8.run(image=x.transpose(0, 2, 3, 1))["feature"] for x in xs]),
                         work.head_input)
        l32 = [qacm32.run({"features": w[None]})["logit"].item() for w in px.qacm_windows(f32, student.window)]
        l8 = [qacm_int8.run(features=w[None, None])["logit"].item() for w in px.qacm_windows(f8, student.window)]
        labels.append(label)
        s32.append(px.clip_score(np.array(l32)))
        s8.append(px.clip_score(np.array(l8)))
    return {"clip_auc_int8_vs_fp32": px.auc_agreement(labels, s32, s8)}


def _tflite_artifact(work: _Work, name: str, stage: str, report: Any, checks: dict[str, dict[str, Any]],
                     fp32_name: str, **fields: Any) -> None:
    from edge_vad_export.budgets import artifact_budgets, count_onnx
    from edge_vad_export.parity import require_passed

    require_passed(FILES[name], checks)
    data = report.as_dict()
    fp32_path = work.writer.path(FILES[fp32_name])
    budgets = artifact_budgets(fp32_path, Path(report.path), "tflite", count=count_onnx(fp32_path))
    conversion = {k: data[k] for k in ("recipe", "range_estimator", "calibration_samples", "full_int8", "float_ops",
                                       "bias_channels_repaired", "nhwc_io", "op_histogram", "seconds") if k in data}
    work.writer.add(name, FILES[name], stage, "tflite", "int8", inputs=_io_entries(data["inputs"]),
                    outputs=_io_entries(data["outputs"]), parity=checks, budgets=budgets,
                    edgetpu_lint=data.get("edgetpu_lint") or None, conversion=conversion, **fields)
    work.progress.done(name, Path(report.path), checks)


# -- manifest ----------------------------------------------------------------------------------------------------


def _manifest_fields(work: _Work, coarse: Any, fine: Optional[FineSource], fine_fields: dict[str, Any],
                     sources: dict[str, Optional[str]], int8_tools: dict[str, str],
                     pipeline_budgets: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    plan, arts = work.plan, work.writer.artifacts
    backbone, student = coarse.backbone, coarse.student
    pre = backbone.preprocess
    preprocessing = {"size": pre.size, "mean": list(pre.mean), "std": list(pre.std), "pixel_format": pre.pixel_format,
                     "resize": "whole frame, cv2.INTER_AREA, no crop" if pre.interpolation == "area" else
                     f"whole frame, cv2.INTER_{pre.interpolation.upper()}, no crop",
                     "interpolation": pre.interpolation, "layout": pre.layout}
    onnx_names = [n for n, a in arts.items() if a["format"] == "onnx"]
    data_names = [n for n, a in arts.items() if a["format"] == "npy" and a["stage"] == "text_table"]
    targets: dict[str, Any] = {"onnx": {"backends": ["onnxruntime"], "artifacts": onnx_names + data_names}}
    if "tensorrt" in plan.targets:
        trt_graphs = [n for n in ("coarse_backbone", "qacm", "clip_visual", "fine_head") if n in arts]
        targets["tensorrt"] = {
            "backends": ["tensorrt", "onnxruntime"], "artifacts": onnx_names + data_names,
            "tensorrt": {"onnx_artifacts": trt_graphs, "precision": plan.tensorrt_precision,
                         "calibration_artifact": "tensorrt_calibration" if "tensorrt_calibration" in arts else None},
            "notes": "engines are built on the device and cached; recurrent and small graphs may run on onnxruntime"}
    if plan.int8:
        coral = [n for n in ("coarse_backbone_int8", "qacm_int8") if n in arts]
        cpu = [n for n in ("fine_head", "clip_visual") if n in arts]
        targets["tflite-int8"] = {
            "backends": ["edgetpu", "tflite"], "artifacts": coral + cpu + data_names,
            "notes": "the int8 coarse graphs run on the Edge TPU (after edgetpu_compiler) or the TFLite CPU "
                     "interpreter; the fine stage's fp32 ONNX runs on the CPU with onnxruntime"}

    pipelines = {}
    coarse_parts = [work.counts[n] for n in ("coarse_backbone", "qacm") if n in work.counts]
    pipelines["coarse_per_frame"] = pipeline_budgets(coarse_parts, "coarse_backbone + qacm")
    fine_parts = [work.counts[n] for n in ("clip_visual", "fine_head") if n in work.counts]
    if fine_parts:
        label = " + ".join(n for n in ("clip_visual", "fine_head") if n in work.counts)
        pipelines["fine_per_frame"] = pipeline_budgets(fine_parts, label)

    fields: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tools": {**tool_versions(("open_clip_torch",) if fine is not None and fine.clip_image is not None else ()),
                  **int8_tools},
        "source_checkpoints": sources,
        "targets": targets,
        "preprocessing": preprocessing,
        "snippet_frames": SNIPPET_FRAMES,
        "classes": list(fine.stage.class_names) if fine is not None else [],  # fine-stage classes
        "coarse": {"backbone": backbone.backbone_name, "backbone_weights_sha256": backbone.weights_sha256(),
                   "feature_dim": int(backbone.branch_channels), "trunk_dim": int(backbone.spec.trunk_channels),
                   "head_input": coarse.head_input, **_heatmap_fields(coarse),
                   "gate": coarse.raw.get("gate"),
                   "heatmap_size": int(backbone.heatmap_size),
                   "window": int(student.window) if student is not None else None,
                   "temperature": coarse.temperature},
        "pipeline_budgets": pipelines,
    }
    if fine is not None:
        stage = fine.stage
        fields["fine"] = {"encoder": fine.encoder, "image_input": fine.image_input, "feature_dim": int(stage.feature_dim),
                          "hidden_dim": int(stage.in_proj.out_features), "embed_dim": int(stage.out_proj.out_features),
                          "tau": float(stage.tau), "normal_class": int(stage.normal_index),
                          "mil_divisor": int(stage.mil_divisor),
                          "frames_per_snippet": CLIP_FRAMES_PER_SNIPPET if fine.clip_image is not None else SNIPPET_FRAMES,
                          **fine_fields}
        clip = fine.image_input == "clip_visual"
        fields["descriptions"] = {
            "source": "clip_zero_shot" if clip else "imagenet_logits",
            "vocabulary": list(fine.vocabulary), "rows": list(stage.prompt.descriptions),
            "vocabulary_to_row": list(fine.vocabulary_to_row), "fallback_row": fine.fallback_row,
            "template": fine.description_template,
            "embeddings_artifact": "description_embeddings" if "description_embeddings" in arts else None}
    return fields
