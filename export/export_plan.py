"""`edge-vad export`, step 1: every option checked before anything heavy runs (no torch needed): targets,
calibration folder, output folder, fine encoder, CLIP checkpoint, and whether the int8 toolchain is installed.
Also the bundle's file names and the frame counts every export step uses."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edge_vad.errors import EdgeVadError, MissingDependency

VALID_TARGETS = ("onnx", "tflite-int8", "edgetpu", "tensorrt")
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
    "fine_describer": "fine_describer.onnx",
    "clip_visual": "clip_visual.onnx",
    "text_table": "text_table.npy",
    "description_embeddings": "description_embeddings.npy",
    "coarse_backbone_int8": "coarse_backbone_int8.tflite",
    "qacm_int8": "qacm_int8.tflite",
    "tensorrt_calibration": "tensorrt_calibration.npy",
    "tensorrt_reference": "tensorrt_reference.npz",
}
# the external-data file names the graphs refer to for their package weights (never in the bundle)
PACKAGE_WEIGHTS_FILE = "coarse_backbone.package-weights.bin"
DESCRIBER_WEIGHTS_FILE = "fine_describer.package-weights.bin"


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
    def edgetpu(self) -> bool:
        """Compile the int8 models for the Edge TPU (edge_vad.bundle.edgetpu_compile) once they exist."""
        return "edgetpu" in self.targets

    @property
    def tensorrt_precision(self) -> str:
        """The engines' default precision on the device: fp16 (every Jetson has fast fp16; int8 is refused on the
        Nano and needs --precision int8 plus the calibration frames --calib puts in the bundle)."""
        return "fp16"

    @property
    def tensorrt_precisions(self) -> tuple[str, ...]:
        return ("fp32", "fp16", "int8") if self.calib is not None else ("fp32", "fp16")

    def notes(self) -> list[str]:
        """What the export tells the user about its plan before it starts."""
        out = []
        if "onnx" not in self.targets:
            out.append("ONNX graphs are always part of a bundle (reference graphs, TensorRT input, budget counts)")
        if "tensorrt" in self.targets:
            out.append(f"TensorRT engines are built on the device from the bundle's ONNX; the bundle records the "
                       f"build settings (default {self.tensorrt_precision}, possible "
                       f"{' / '.join(self.tensorrt_precisions)}"
                       + (f"; {CALIBRATION_FRAMES} int8 calibration frames" if self.calib is not None else
                          "; pass --calib DIR for int8") + ") and reference outputs every new engine must reproduce")
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
    from edge_vad.bundle.writer import check_out_dir

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
    if "edgetpu" in names and "tflite-int8" not in names:
        raise EdgeVadError("the edgetpu target compiles the int8 TFLite models: pass --targets ...,tflite-int8,edgetpu")
    check_out_dir(Path(out), force)
    if "edgetpu" in names:
        from edge_vad.bundle.edgetpu_compile import find_compiler

        find_compiler()  # before hours of work: one line naming where to get it (exit 2)
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
