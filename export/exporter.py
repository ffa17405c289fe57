"""`edge-vad export`: trained checkpoints -> a verified model bundle (DESIGN.md conventions 2 and 6).

Order of work (one module per step or target):
1. `plan_export` (export_plan.py) checks every option before anything heavy runs (no torch needed):
   targets, calibration folder, output folder, fine encoder, CLIP checkpoint, and whether the int8
   toolchain is installed.
2. `export_bundle` (here) writes every artifact into a temporary folder (edge_vad_export.bundle_writer):
   ONNX graphs (always: they are the reference graphs, the TensorRT input and what the budgets are counted
   on), parity checks against PyTorch (a failed check fails the export), budgets, the fine stage
   (fine_export.py), optionally int8 TFLite through the tflite-int8 hook (int8_export.py) and its Edge TPU
   compile (target edgetpu: edge_vad.bundle.edgetpu_compile, the same code as `models compile-edgetpu`), the
   constant text table; then the manifest (manifest_fields.py), validated by the runtime's own schema, and one rename
   into place.

The tflite-int8 target is an optional hook: it works where `edge_vad_export.tflite_int8` imports and
litert_torch, ai_edge_quantizer and ai_edge_litert are installed (the `export` extra); elsewhere asking for
it is a MissingDependency naming that extra. TensorRT engines are never built here: they are specific to the
device's GPU and TensorRT version, so the bundle records the ONNX and the build settings and the device builds
and caches the engine (edge_vad.backends.tensorrt_backend).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edge_vad.errors import EdgeVadError, MissingDependency
from edge_vad_export.export_plan import (CALIB_OFFSET, CALIBRATION_FRAMES, FILES, PACKAGE_WEIGHTS_FILE, PARITY_FRAMES,
                                        PARITY_OFFSET, QACM_PARITY_WINDOWS, TRAIN_EXTRA_HINT, ExportPlan)
from edge_vad_export.export_work import ExportWork, Progress, onnx_artifact, resized_rgb
from edge_vad_export.fine_export import FineSource, export_fine, load_fine_source
from edge_vad_export.head_stream import stream_head_inputs
from edge_vad_export.int8_export import compile_for_edgetpu, export_int8
from edge_vad_export.manifest_fields import manifest_fields
from edge_vad_export.package_weights import leave_in_package


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
    from edge_vad.bundle.writer import BundleWriter
    from edge_vad_models.checkpoint import COARSE_FILE, load_coarse, resolve_checkpoint_dir

    progress = Progress(console)
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
        work = ExportWork(plan, writer, progress, head_input=coarse.head_input, scratch=Path(scratch))
        # -- coarse backbone --------------------------------------------------------------------------------
        progress.step("coarse backbone -> ONNX")
        graph = ox.export_coarse_backbone(backbone, writer.path(FILES["coarse_backbone"]))
        package_weights, work.backbone_onnx = leave_in_package(work, backbone, graph.path, PACKAGE_WEIGHTS_FILE)
        images = [backbone.preprocess_bgr(f).numpy() for f in frames]
        # parity runs on the graph as the device loads it: package weights laid out by the runtime's own code
        checks, ref = px.onnx_vs_torch(ox.PerFrameBackbone(backbone), work.backbone_onnx, [{"image": x} for x in images],
                                       what=frames_note)
        onnx_artifact(work, "coarse_backbone", "coarse_backbone", graph, checks, package_weights=package_weights)
        channels = backbone.branch_channels  # the heads read head_inputs() of streams of these outputs

        # -- QACM student -----------------------------------------------------------------------------------
        qacm_reference_windows = None
        if student is not None:
            student = student.eval()
            progress.step(f"coarse head {type(student).__name__} (W = {student.window}) -> ONNX")
            graph = ox.export_qacm(student, writer.path(FILES["qacm"]))
            seq = stream_head_inputs(ref, QACM_PARITY_WINDOWS + student.window, coarse.head_input, channels)
            windows = px.qacm_windows(seq, student.window)[-QACM_PARITY_WINDOWS:]
            checks, _ = px.onnx_vs_torch(ox.QacmWindow(student), graph.path, [{"features": w[None]} for w in windows],
                                         what="feature windows (backbone features of the parity frames, 10% noise)")
            onnx_artifact(work, "qacm", "coarse_head", graph, checks, window=int(student.window))
            qacm_reference_windows = windows
        else:
            progress.warn("the checkpoint has no QACM student: the bundle's coarse head is missing")

        # -- AFED teacher, single step ----------------------------------------------------------------------
        progress.step(f"AFED teacher step -> ONNX (parity over {px.RECURRENT_STEPS} steps)")
        graph = ox.export_teacher_step(teacher, writer.path(FILES["teacher_step"]))
        seq = stream_head_inputs(ref, px.RECURRENT_STEPS, coarse.head_input, channels)
        check = px.recurrent_parity(graph.path, seq, teacher.init_state(1).numpy(),
                                    lambda s: teacher(torch.from_numpy(s)).detach().numpy(), "feature", "logit",
                                    what="teacher logit")
        onnx_artifact(work, "teacher_step", "coarse_teacher", graph, {"logit_recurrent_vs_parallel": check},
                       recurrent_state=ox.rwkv_state_info(teacher.rwkv))

        # -- fine stage --------------------------------------------------------------------------------------
        fine_fields: dict[str, Any] = {}
        if fine is not None:
            fine_fields = export_fine(work, fine, backbone, frames, frames_note, ref)

        # -- int8 TFLite (optional hook) ---------------------------------------------------------------------
        int8_tools: dict[str, str] = {}
        if plan.int8:
            int8_tools = export_int8(work, backbone, student)
        if plan.edgetpu:
            int8_tools.update(compile_for_edgetpu(work))

        # -- TensorRT build settings and reference samples ---------------------------------------------------
        if "tensorrt" in plan.targets:
            from edge_vad_export.trt_reference import write_reference

            progress.step("TensorRT reference outputs (what an engine built on the device must reproduce)")
            work.trt_reference = write_reference(work, frames, backbone.preprocess, qacm_reference_windows,
                                                 frames_note)
        if "tensorrt" in plan.targets and plan.calib is not None:
            calib = px.collect_frames(plan.calib, CALIBRATION_FRAMES, offset=CALIB_OFFSET)
            data = np.stack([resized_rgb(f, backbone.preprocess) for f in calib])
            ox.save_npy(data, writer.path(FILES["tensorrt_calibration"]))
            writer.add("tensorrt_calibration", FILES["tensorrt_calibration"], "calibration", "npy", "uint8",
                       shape=list(data.shape), layout="[frames, size, size, 3] uint8 RGB, resized as `preprocessing`; "
                       "normalise with its mean / std (and NHWC -> NCHW) before feeding",
                       conversion={"frames": len(calib), "source": f"{plan.calib.name}/"})

        fields = manifest_fields(work, coarse, fine, fine_fields, sources, int8_tools, pipeline_budgets)
        progress.step(f"writing {plan.out}")
        manifest = writer.finish(fields)
    progress.step(f"[green]bundle written[/green]: {plan.out} ({len(manifest.artifacts)} artifacts)")
    return manifest
