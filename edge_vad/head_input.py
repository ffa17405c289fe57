"""What the coarse heads (QACM student, AFED teacher) read per frame, built from the backbone's pooled F_A.

Two kinds, recorded in the checkpoint and the bundle manifest (`coarse.head_input`):
- "feature": the pooled F_A itself, [D];
- "feature+absdiff": [pooled F_A(t), |pooled F_A(t) - pooled F_A(t-1)|], [2D], zeros in the second half at
  the first frame of a stream. Fights are mostly motion; frame-to-frame change is a cue a small causal head
  cannot build from D post-ReLU averages itself (it has no absolute value), and on fight-surv it lifted the
  validation clip AUC of the teacher from 0.74 to 0.84 (models/default/MODEL_CARD.md).
Training, export parity and the device all call these functions, so the three cannot drift apart.
The difference is between consecutive SCORED frames: run with the frame rate and stride the model was trained
with (the default models: every frame of 25-30 fps video).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from edge_vad.errors import EdgeVadError

FEATURE = "feature"
FEATURE_ABSDIFF = "feature+absdiff"
HEAD_INPUTS = (FEATURE, FEATURE_ABSDIFF)


def _check(kind: str) -> None:
    if kind not in HEAD_INPUTS:
        raise EdgeVadError(f"unknown coarse head input {kind!r}; expected one of {', '.join(HEAD_INPUTS)} "
                           "(re-export the bundle with this version of edge-vad)")


def head_input_dim(kind: str, feature_dim: int) -> int:
    """Width of the head input for pooled features of width `feature_dim`."""
    _check(kind)
    return feature_dim * (2 if kind == FEATURE_ABSDIFF else 1)


def head_inputs(features: np.ndarray, kind: str) -> np.ndarray:
    """A whole stream [T, D] of pooled features -> head inputs [T, head_input_dim] (float32)."""
    _check(kind)
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise EdgeVadError(f"head inputs are built from a [frames, dim] feature stream, got shape {list(x.shape)}")
    if kind == FEATURE:
        return x
    diff = np.abs(np.diff(x, axis=0, prepend=x[:1]))  # row 0: |x0 - x0| = 0
    return np.concatenate([x, diff], axis=1)


def head_input_step(feature: np.ndarray, previous: Optional[np.ndarray], kind: str) -> np.ndarray:
    """Streaming form of `head_inputs`: one frame's pooled feature [D] and the previous frame's (None at the
    stream start) -> that frame's head input [head_input_dim]."""
    _check(kind)
    f = np.asarray(feature, dtype=np.float32).reshape(-1)
    if kind == FEATURE:
        return f
    diff = np.zeros_like(f) if previous is None else np.abs(f - np.asarray(previous, np.float32).reshape(-1))
    return np.concatenate([f, diff])
