"""What the coarse heads (QACM student, AFED teacher) read per frame, built from the backbone's pooled F_A.

Two kinds, recorded in the checkpoint and the bundle manifest (`coarse.head_input`):
- "feature": the pooled F_A itself, [D];
- "feature+motion": [F(t), M(t)], [2D], with M(t) = max(|F(t) - F(t-1)|, |F(t-1) - F(t-2)|) elementwise
  (zeros at the first frame of a stream; the second term is skipped at the second). Fights are mostly motion,
  and frame-to-frame change is a cue a small causal head cannot build from D post-ReLU averages itself (it has
  no absolute value). The max over two steps matters: much CCTV footage (fight-surv included) is 2x frame-
  doubled, so every other |F(t) - F(t-1)| is ~0 and a one-step difference made the score flicker frame by
  frame; on the fight-surv validation stream the frame AUC went from 0.72 (one step) to 0.77 (two).
Training, export parity and the device all call these functions, so the three cannot drift apart.
The difference is between consecutive SCORED frames: run with the frame rate and stride the model was trained
with (the default models: every frame of 25-30 fps video).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from edge_vad.errors import EdgeVadError

FEATURE = "feature"
FEATURE_MOTION = "feature+motion"
HEAD_INPUTS = (FEATURE, FEATURE_MOTION)


def _check(kind: str) -> None:
    if kind not in HEAD_INPUTS:
        raise EdgeVadError(f"unknown coarse head input {kind!r}; expected one of {', '.join(HEAD_INPUTS)} "
                           "(re-export the bundle with this version of edge-vad)")


def head_input_dim(kind: str, feature_dim: int) -> int:
    """Width of the head input for pooled features of width `feature_dim`."""
    _check(kind)
    return feature_dim * (2 if kind == FEATURE_MOTION else 1)


def head_inputs(features: np.ndarray, kind: str) -> np.ndarray:
    """A whole stream [T, D] of pooled features -> head inputs [T, head_input_dim] (float32)."""
    _check(kind)
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise EdgeVadError(f"head inputs are built from a [frames, dim] feature stream, got shape {list(x.shape)}")
    if kind == FEATURE:
        return x
    diff = np.abs(np.diff(x, axis=0, prepend=x[:1]))  # row 0: |x0 - x0| = 0
    motion = np.maximum(diff, np.concatenate([diff[:1], diff[:-1]]))  # row 0: max(0, 0); row 1: max(d1, 0)
    return np.concatenate([x, motion], axis=1)


@dataclass(frozen=True, eq=False)
class MotionState:
    """What the streaming form carries: the previous frame's pooled feature and |difference| (None at start)."""

    previous: Optional[np.ndarray] = None
    previous_diff: Optional[np.ndarray] = None


def head_input_step(feature: np.ndarray, state: MotionState, kind: str) -> Tuple[np.ndarray, MotionState]:
    """Streaming form of `head_inputs`: one frame's pooled feature [D] -> (its head input, the new state)."""
    _check(kind)
    f = np.asarray(feature, dtype=np.float32).reshape(-1)
    if kind == FEATURE:
        return f, state
    diff = np.zeros_like(f) if state.previous is None else np.abs(f - state.previous)
    motion = diff if state.previous_diff is None else np.maximum(diff, state.previous_diff)
    return np.concatenate([f, motion]), MotionState(f, diff)
