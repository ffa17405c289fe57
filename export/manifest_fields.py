"""The manifest's fields of an export run: preprocessing, targets, budgets per pipeline, coarse and fine
stage records (validated by the runtime's schema in edge_vad.bundle.manifest when the bundle is written)."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Callable, Optional

from edge_vad.bundle.manifest import FORMAT_VERSION
from edge_vad.constants import CLIP_FRAMES_PER_SNIPPET, EXACT_AREA, SNIPPET_FRAMES
from edge_vad.resize import EXACT_AREA_TEXT
from edge_vad_export.export_work import ExportWork, tool_versions
from edge_vad_export.fine_export import FineSource

FINE_PER_FRAME = ("clip_visual", "fine_describer", "fine_head")  # the graphs a frame the fine stage reads runs


def heatmap_fields(coarse: Any) -> dict[str, Any]:
    """How the device draws the heatmap: for "trunk+fa-motion" heads F_A's change x grey-level motion
    (edge_vad.runtime.heatmap), else the deployed head's channel weights (the student; the teacher without one)."""
    from edge_vad.head_input import TRUNK_FA_MOTION
    from edge_vad_models.explain.heatmaps import WEIGHT_RULES, channel_weights

    if coarse.head_input == TRUNK_FA_MOTION:
        return {"heatmap_weights": None, "heatmap_kind": "fa-motion",
                "heatmap_rule": "upsample(sum_c |F_A[c](t) - F_A[c](t-1)|, 28) x (grey motion 28 x 28 + 0.5 mean + "
                                "1e-6); edge_vad.runtime.heatmap"}

    head = "student" if coarse.student is not None else "teacher"
    weights = channel_weights(coarse, head)
    return {"heatmap_weights": [round(float(w), 7) for w in weights],
            "heatmap_rule": f"relu(sum_c w_c F_A[c]), w = {head}: {WEIGHT_RULES[head]}"}


def manifest_fields(work: ExportWork, coarse: Any, fine: Optional[FineSource], fine_fields: dict[str, Any],
                     sources: dict[str, Optional[str]], int8_tools: dict[str, str],
                     pipeline_budgets: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    plan, arts = work.plan, work.writer.artifacts
    backbone, student = coarse.backbone, coarse.student
    pre = backbone.preprocess
    preprocessing = {"size": pre.size, "mean": list(pre.mean), "std": list(pre.std), "pixel_format": pre.pixel_format,
                     "resize": EXACT_AREA_TEXT if pre.interpolation == EXACT_AREA else
                     f"whole frame, cv2.INTER_{pre.interpolation.upper()}, no crop",
                     "interpolation": pre.interpolation, "layout": pre.layout}
    onnx_names = [n for n, a in arts.items() if a["format"] == "onnx"]
    data_names = [n for n, a in arts.items() if a["format"] == "npy" and a["stage"] == "text_table"]
    targets: dict[str, Any] = {"onnx": {"backends": ["onnxruntime"], "artifacts": onnx_names + data_names}}
    if "tensorrt" in plan.targets:
        from edge_vad_export.onnx_export import MIN_TENSORRT_FOR_OPSET

        # the graphs TensorRT builds; the recurrent fine head runs on onnxruntime (edge_vad.runtime.backend_plan)
        trt_graphs = [n for n in ("coarse_backbone", "qacm", "clip_visual") if n in arts]
        opset = max(arts[n]["conversion"]["opset"] for n in trt_graphs)  # the newest decides the TensorRT needed
        targets["tensorrt"] = {
            "backends": ["tensorrt", "onnxruntime"], "artifacts": onnx_names + data_names,
            "tensorrt": {"onnx_artifacts": trt_graphs, "precision": plan.tensorrt_precision,
                         "calibration_artifact": "tensorrt_calibration" if "tensorrt_calibration" in arts else None,
                         "opset": opset, "min_tensorrt": MIN_TENSORRT_FOR_OPSET[opset],
                         "reference": work.trt_reference},
            "notes": "engines are built on the device, checked against the reference outputs and cached; the "
                     "recurrent fine head runs on onnxruntime"}
    if plan.int8:
        coral = [n for n in ("coarse_backbone_int8", "qacm_int8") if n in arts]
        cpu = [n for n in ("fine_head", "fine_describer", "clip_visual") if n in arts]
        targets["tflite-int8"] = {
            "backends": ["tflite"], "artifacts": coral + cpu + data_names,
            "notes": "the int8 coarse graphs run on the TFLite CPU interpreter (the edgetpu target has them compiled "
                     "for the Edge TPU); the fine stage's fp32 ONNX runs on the CPU with onnxruntime"}
    if work.edgetpu_renames:
        from edge_vad.bundle.edgetpu_compile import EDGETPU_TARGET, edgetpu_target

        targets[EDGETPU_TARGET] = edgetpu_target(targets, work.edgetpu_renames)

    pipelines = {}
    coarse_parts = [work.counts[n] for n in ("coarse_backbone", "qacm") if n in work.counts]
    pipelines["coarse_per_frame"] = pipeline_budgets(coarse_parts, "coarse_backbone + qacm")
    fine_parts = [work.counts[n] for n in FINE_PER_FRAME if n in work.counts]
    if fine_parts:
        label = " + ".join(n for n in FINE_PER_FRAME if n in work.counts)
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
                   "head_input": coarse.head_input, **heatmap_fields(coarse),
                   "gate": coarse.raw.get("gate"),
                   "heatmap_size": int(backbone.heatmap_size),
                   "window": int(student.window) if student is not None else None,
                   "head_kind": coarse.raw.get("student_kind", "qacm"),
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
            "source": "clip_zero_shot" if clip else "frame_describer",
            "vocabulary": list(fine.vocabulary), "rows": list(stage.prompt.descriptions),
            "vocabulary_to_row": list(fine.vocabulary_to_row), "fallback_row": fine.fallback_row,
            "template": fine.description_template,
            "embeddings_artifact": "description_embeddings" if "description_embeddings" in arts else None}
    return fields
