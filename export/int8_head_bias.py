"""The int8 coarse head as the device feeds it: head inputs from the INT8 backbone.

The int8 backbone's rounding error is noise on every frame feature. The head reads statistics of frame-to-frame
differences (|x(t+1) - x(t)|, its maximum, the deviation), which noise only ever raises, so a head fitted on fp32
features scores int8 features systematically higher (on the issue-15 model: +0.30 logit on average, +0.05 in
probability). This is the expected-quantisation-error bias of post-training quantisation; the usual remedy is
bias correction: measure the mean shift on real data and subtract it from the layer's bias.

Here, on labelled clips of --calib (consecutive frames, as the runtime streams them):
- `estimate`: half of the clips, through both backbones: the head's mean logit shift (int8 inputs minus fp32
  inputs, the head in fp32), and the int8 windows themselves, on which the int8 head is then calibrated;
- `corrected_head`: a copy of the head whose output bias absorbs that shift (the head is linear in its
  statistics, so one scalar removes the mean shift of every statistic);
- `score_checks`: the other half, the whole int8 path (int8 backbone + int8 head) against the fp32 graphs:
  the remaining mean logit shift and the frame-score AUC agreement, recorded as parity checks. The CPU backend
  choice (edge_vad.runtime.backend_choice) runs int8 only where every check passed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import numpy as np

from edge_vad_export.export_work import ExportWork, ort_backbone
from edge_vad_export.head_stream import frames_head_inputs

STREAM_FRAMES = 40  # consecutive frames per clip: more than one window (W = 16) of real motion
LOGIT_BIAS_TOLERANCE = 0.1  # |mean logit shift| left after correction (0.1 logit ~ 2.5 % probability at 0.5)
FRAME_AUC_TOLERANCE = 0.01  # |frame AUC int8 - fp32| on the check clips (issue 15: within 0.01)


@dataclass
class BiasEstimate:
    logit_shift: float  # mean over windows of head(int8 inputs) - head(fp32 inputs), before correction
    windows_int8: np.ndarray  # [N, W, D] int8-backbone windows: the int8 head's calibration set
    clips: int


def consecutive_frames(path: Path, count: int = STREAM_FRAMES) -> List[np.ndarray]:
    """The first `count` consecutive BGR frames of a video file or an image folder."""
    import cv2

    from edge_vad_export.parity import IMAGE_SUFFIXES

    path = Path(path)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
        return [f for f in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in images) if f is not None]
    cap = cv2.VideoCapture(str(path))
    frames: List[np.ndarray] = []
    try:
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            frames.append(frame)
    finally:
        cap.release()
    return frames


def split_clips(clips: Sequence[Tuple[Path, int]]) -> Tuple[list, list]:
    """(estimation clips, check clips): alternate clips of each label, so both halves hold both labels."""
    est, chk = [], []
    for label in (0, 1):
        items = [c for c in clips if c[1] == label]
        est += items[0::2]
        chk += items[1::2]
    return est, chk


def _streams(work: ExportWork, backbone: Any, bb_int8: Any, clips: Sequence[Tuple[Path, int]]):
    """Per clip: (label, fp32 head inputs [T, D], int8 head inputs [T, D])."""
    for path, label in clips:
        frames = consecutive_frames(path)
        if len(frames) < 2:
            continue
        xs = [backbone.preprocess_bgr(f).numpy() for f in frames]
        f32 = frames_head_inputs([ort_backbone(work, x) for x in xs], work.head_input, backbone.branch_channels)
        f8 = frames_head_inputs([bb_int8.run(image=x.transpose(0, 2, 3, 1)) for x in xs], work.head_input,
                                backbone.branch_channels)
        yield label, f32, f8


def _head_logits(head: Any, windows: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return head.forward_window(torch.as_tensor(windows)).numpy().astype(np.float64)


def estimate(work: ExportWork, backbone: Any, bb_int8: Any, head: Any, clips) -> BiasEstimate:
    from edge_vad_export.parity import qacm_windows

    shifts, windows8, n = [], [], 0
    for _, f32, f8 in _streams(work, backbone, bb_int8, clips):
        w32, w8 = qacm_windows(f32, head.window), qacm_windows(f8, head.window)
        shifts.append(_head_logits(head, w8) - _head_logits(head, w32))
        windows8.append(w8)
        n += 1
    return BiasEstimate(float(np.mean(np.concatenate(shifts))), np.concatenate(windows8).astype(np.float32), n)


def corrected_head(head: Any, shift: float) -> Any:
    """A copy of a WindowStatsHead whose readout bias is lowered by `shift` (logits)."""
    import torch

    fixed = copy.deepcopy(head).eval()
    with torch.no_grad():
        fixed.readout[0].bias -= float(shift)
    return fixed


def score_checks(work: ExportWork, backbone: Any, bb_int8: Any, head_int8: Any, head_fp32_onnx: Path,
                 clips, estimate_: BiasEstimate) -> dict:
    """Parity checks of the whole int8 path against the fp32 graphs on the check clips (module doc)."""
    from sklearn.metrics import roc_auc_score

    from edge_vad_export.parity import OrtRunner, check, qacm_windows

    ort_head = OrtRunner(head_fp32_onnx)
    labels, l32, l8 = [], [], []
    for label, f32, f8 in _streams(work, backbone, bb_int8, clips):
        w32 = qacm_windows(f32, estimate_.windows_int8.shape[1])
        w8 = qacm_windows(f8, estimate_.windows_int8.shape[1])
        l32.append(np.array([ort_head.run({"features": w[None]})["logit"].item() for w in w32]))
        l8.append(np.array([head_int8.run(features=w[None, None])["logit"].item() for w in w8]))  # NHWC [1, 1, W, D]
        labels.append(np.full(len(w32), label))
    y, a, b = np.concatenate(labels), np.concatenate(l32), np.concatenate(l8)
    shift = float(np.mean(b - a))
    auc32, auc8 = float(roc_auc_score(y, a)), float(roc_auc_score(y, b))
    p = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    detail = (f"{len(labels)} clips x {STREAM_FRAMES} consecutive frames not used for the correction: int8 backbone + "
              f"int8 head vs fp32 ONNX; shift before correction {estimate_.logit_shift:+.3f} (from {estimate_.clips} "
              f"other clips); mean |score difference| {np.mean(np.abs(p(b) - p(a))):.4f}")
    return {"logit_shift_int8_vs_fp32": check("abs_mean_logit_diff", abs(shift), LOGIT_BIAS_TOLERANCE, "<=", detail),
            "frame_auc_int8_vs_fp32": check("auc_abs_diff", abs(auc8 - auc32), FRAME_AUC_TOLERANCE, "<=",
                                            f"{len(y)} frames: AUC fp32 {auc32:.4f}, int8 {auc8:.4f}")}
