"""The tflite-int8 target: full-int8 TFLite of the coarse backbone and the QACM student through the
`edge_vad_export.tflite_int8` hook, with the int8-vs-fp32 feature cosine and clip-AUC agreement checks."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from edge_vad_export.export_plan import (CALIB_OFFSET, CALIBRATION_FRAMES, FILES, INT8_PARITY_FRAMES, INT8_PARITY_OFFSET,
                                        MIN_VALIDATION_CLIPS_PER_LABEL, VALIDATION_CLIPS_PER_LABEL,
                                        VALIDATION_FRAMES_PER_CLIP)
from edge_vad_export.export_work import ExportWork, io_entries, ort_backbone
from edge_vad_export.head_stream import frames_head_inputs


def int8_modules(backbone: Any, student: Any) -> tuple[Any, Any]:
    """Edge-TPU-friendly forms of the coarse networks, same arithmetic (parity checks prove it): the backbone's
    per-frame outputs (no ImageNet classifier: the fine stage's describer graph runs that), means over an NHWC
    view (an NCHW mean leaves TRANSPOSE ops) and the QACM's (1, k) convolutions with dilation (d, d) instead of
    (1, d) (identical for height 1; the Edge TPU wants equal dilations)."""
    import copy

    import torch
    from torch import nn

    class Backbone(nn.Module):
        def __init__(self, net: Any):
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:  # the per-frame outputs only
            feature, heatmap, trunk_feature = self.net.per_frame_outputs(image)
            return {"feature": feature, "heatmap": heatmap, "trunk_feature": trunk_feature}

    class WindowStats(nn.Module):
        def __init__(self, head: nn.Module):
            super().__init__()
            self.head = copy.deepcopy(head)

        def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:  # [1, D, 1, W] -> [1, 1]
            return {"logit": self.head.logit_nchw(features).reshape(1, 1)}

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

    if student is None:
        return Backbone(backbone).eval(), None
    head = WindowStats(student) if hasattr(student, "logit_nchw") else Qacm(student.net)
    return Backbone(backbone).eval(), head.eval()


def export_int8(work: ExportWork, backbone: Any, student: Any) -> dict[str, str]:
    import torch

    from edge_vad_export import parity as px

    hook = importlib.import_module("edge_vad_export.tflite_int8")
    plan, writer, progress = work.plan, work.writer, work.progress
    assert plan.calib is not None
    calib = px.collect_frames(plan.calib, CALIBRATION_FRAMES, offset=CALIB_OFFSET)
    held_out = px.collect_frames(plan.calib, INT8_PARITY_FRAMES, offset=INT8_PARITY_OFFSET)
    nchw = np.concatenate([backbone.preprocess_bgr(f).numpy() for f in calib])
    bb_module, qacm_module = int8_modules(backbone, student)

    progress.step(f"coarse backbone -> full-int8 TFLite ({len(calib)} calibration frames)")
    path = writer.path(FILES["coarse_backbone_int8"])
    size = backbone.preprocess.size
    report = hook.convert_full_int8(bb_module, torch.zeros(1, 3, size, size), [nchw], path, input_name="image")
    runner = hook.TfliteRunner(path)
    held = [backbone.preprocess_bgr(f).numpy() for f in held_out]
    fp32 = px.torch_outputs_many(bb_module, held)
    int8 = {k: np.concatenate([runner.run(image=x.transpose(0, 2, 3, 1))[k] for x in held]) for k in fp32}
    checks = px.int8_feature_checks(fp32, int8, ["feature", "trunk_feature"])
    tflite_artifact(work, "coarse_backbone_int8", "coarse_backbone", report, checks, "coarse_backbone")

    corrected = qacm_module is not None and hasattr(student, "logit_nchw") and \
        int8_window_head(work, backbone, runner, student, hook)
    if qacm_module is not None and not corrected:
        progress.step("QACM student -> full-int8 TFLite")
        features = frames_head_inputs([ort_backbone(work, x) for x in nchw[:, None]], work.head_input,
                                      backbone.branch_channels)
        windows = px.qacm_windows(features, student.window)  # [N, W, D]
        calib_q = windows.transpose(0, 2, 1)[:, :, None, :]  # [N, D, 1, W] NCHW
        qpath = writer.path(FILES["qacm_int8"])
        qreport = hook.convert_full_int8(qacm_module, torch.zeros(1, student.in_dim, 1, student.window), [calib_q],
                                         qpath, input_name="features")
        qchecks = auc_check(work, backbone, runner, hook.TfliteRunner(qpath), student)
        tflite_artifact(work, "qacm_int8", "coarse_head", qreport, qchecks, "qacm", window=int(student.window))
    return {k: v for k, v in hook.tool_versions().items() if k not in ("torch", "numpy")}


def int8_window_head(work: ExportWork, backbone: Any, bb_int8: Any, student: Any, hook: Any) -> bool:
    """The window-statistics head in int8, bias-corrected for the int8 backbone and calibrated on its windows
    (edge_vad_export.int8_head_bias); parity: clip AUC, and the int8 path's logit shift and frame AUC. False (and a
    warning) without enough labelled clips under --calib: the caller converts the head uncorrected and unchecked,
    which keeps a CPU on the fp32 graphs by default (edge_vad.runtime.backend_choice)."""
    import torch

    from edge_vad_export import int8_head_bias as hb
    from edge_vad_export import parity as px

    clips = px.labelled_clips(work.plan.calib)
    est_clips, check_clips = hb.split_clips(clips)
    if min(sum(1 for c in check_clips if c[1] == lab) for lab in (0, 1)) < MIN_VALIDATION_CLIPS_PER_LABEL // 2:
        work.progress.warn(f"int8 head not bias-corrected: that needs >= {MIN_VALIDATION_CLIPS_PER_LABEL} clips in each "
                           f"of a normal and an anomaly sub-folder of --calib (e.g. noFight/ and fight/); found "
                           f"{len(clips)} labelled clips")
        return False
    step = max(1, len(est_clips) // (2 * VALIDATION_CLIPS_PER_LABEL))
    work.progress.step(f"window head -> full-int8 TFLite (bias correction on {len(est_clips[::step])} clips)")
    estimate = hb.estimate(work, backbone, bb_int8, student, est_clips[::step])
    head = hb.corrected_head(student, estimate.logit_shift)
    _, module = int8_modules(backbone, head)
    calib_q = estimate.windows_int8.transpose(0, 2, 1)[:, :, None, :]  # [N, D, 1, W] NCHW
    qpath = work.writer.path(FILES["qacm_int8"])
    qreport = hook.convert_full_int8(module, torch.zeros(1, student.in_dim, 1, student.window), [calib_q], qpath,
                                     input_name="features")
    head_int8 = hook.TfliteRunner(qpath)
    step = max(1, len(check_clips) // (2 * VALIDATION_CLIPS_PER_LABEL))
    checks = {**auc_check(work, backbone, bb_int8, head_int8, student),
              **hb.score_checks(work, backbone, bb_int8, head_int8, work.writer.path(FILES["qacm"]),
                                check_clips[::step], estimate)}
    tflite_artifact(work, "qacm_int8", "coarse_head", qreport, checks, "qacm", window=int(student.window))
    return True


def auc_check(work: ExportWork, backbone: Any, bb_int8: Any, qacm_int8: Any, student: Any) -> dict[str, dict[str, Any]]:
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
        f32 = frames_head_inputs([ort_backbone(work, x) for x in xs], work.head_input, backbone.branch_channels)
        f8 = frames_head_inputs([bb_int8.run(image=x.transpose(0, 2, 3, 1)) for x in xs], work.head_input,
                                backbone.branch_channels)
        l32 = [qacm32.run({"features": w[None]})["logit"].item() for w in px.qacm_windows(f32, student.window)]
        l8 = [qacm_int8.run(features=w[None, None])["logit"].item() for w in px.qacm_windows(f8, student.window)]
        labels.append(label)
        s32.append(px.clip_score(np.array(l32)))
        s8.append(px.clip_score(np.array(l8)))
    return {"clip_auc_int8_vs_fp32": px.auc_agreement(labels, s32, s8)}


def tflite_artifact(work: ExportWork, name: str, stage: str, report: Any, checks: dict[str, dict[str, Any]],
                     fp32_name: str, **fields: Any) -> None:
    from edge_vad_export.budgets import artifact_budgets, count_onnx
    from edge_vad_export.parity import require_passed

    require_passed(FILES[name], checks)
    data = report.as_dict()
    fp32_path = work.writer.path(FILES[fp32_name])
    budgets = artifact_budgets(fp32_path, Path(report.path), "tflite", count=count_onnx(fp32_path))
    conversion = {k: data[k] for k in ("recipe", "range_estimator", "calibration_samples", "full_int8", "float_ops",
                                       "bias_channels_repaired", "nhwc_io", "op_histogram", "seconds") if k in data}
    work.writer.add(name, FILES[name], stage, "tflite", "int8", inputs=io_entries(data["inputs"]),
                    outputs=io_entries(data["outputs"]), parity=checks, budgets=budgets,
                    edgetpu_lint=data.get("edgetpu_lint") or None, conversion=conversion, **fields)
    work.progress.done(name, Path(report.path), checks)


# -- manifest ----------------------------------------------------------------------------------------------------


def compile_for_edgetpu(work: ExportWork) -> dict[str, str]:
    """Target edgetpu: the int8 models just written go through edgetpu_compiler (the code of `edge-vad models
    compile-edgetpu`); the compiled models become artifacts of the `edgetpu` target (manifest_fields)."""
    from edge_vad.bundle.edgetpu_compile import COMPILER, add_edgetpu_models, compile_summary, find_compiler

    work.progress.step("int8 TFLite -> Edge TPU (edgetpu_compiler)")
    work.edgetpu_renames = add_edgetpu_models(work.writer, find_compiler())
    version = ""
    for compiled in work.edgetpu_renames.values():
        record = work.writer.artifacts[compiled]["edgetpu_compile"]
        version = record["compiler_version"]
        work.progress.note(compile_summary(compiled, record))
    return {COMPILER: version}
