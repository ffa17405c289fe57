"""What the coarse heads (QACM student, AFED teacher) read per frame, built from the backbone's outputs.

Three kinds, recorded in the checkpoint and the bundle manifest (`coarse.head_input`):
- "trunk+fa-motion" (the default since issue 15): [P(t), mean_hw |A(t) - A(t-1)|, max_hw |A(t) - A(t-1)|],
  [T + 2C], with P the pooled trunk feature (`trunk_feature`, what the backbone knows about the scene) and A the
  F_A map [C, h, w] (`heatmap`): the mean and the largest change of each F_A channel over the positions. A
  moving object barely changes the POOLED feature (it is still in the frame) but changes F_A where it was and
  where it is; the change of the pooled feature (the kind below) missed that. Zeros at a stream's first frame.
  On the cross-validation folds it beat [P] alone on the stitched streams (models/default/MODEL_CARD.md).
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
TRUNK_FA_MOTION = "trunk+fa-motion"
HEAD_INPUTS = (FEATURE, FEATURE_MOTION, TRUNK_FA_MOTION)


def _check(kind: str) -> None:
    if kind not in HEAD_INPUTS:
        raise EdgeVadError(f"unknown coarse head input {kind!r}; expected one of {', '.join(HEAD_INPUTS)} "
                           "(re-export the bundle with this version of edge-vad)")


def head_input_dim(kind: str, feature_dim: int, trunk_dim: Optional[int] = None) -> int:
    """Width of the head input for pooled F_A of width `feature_dim` (and a trunk feature of `trunk_dim`)."""
    _check(kind)
    if kind == TRUNK_FA_MOTION:
        if trunk_dim is None:
            raise EdgeVadError(f"head input {kind!r} needs the trunk feature's width")
        return int(trunk_dim) + 2 * feature_dim
    return feature_dim * (2 if kind == FEATURE_MOTION else 1)


def map_motion(maps: np.ndarray) -> np.ndarray:
    """F_A maps of a stream [T, C, h, w] -> [T, 2C]: mean and max over positions of |A(t) - A(t-1)| (row 0: 0)."""
    a = np.asarray(maps, dtype=np.float32)
    if a.ndim != 4:
        raise EdgeVadError(f"F_A maps must be [frames, channels, h, w], got shape {list(a.shape)}")
    out = np.zeros((len(a), 2 * a.shape[1]), dtype=np.float32)
    if len(a) > 1:
        d = np.abs(a[1:] - a[:-1])
        out[1:, :a.shape[1]] = d.mean(axis=(2, 3))
        out[1:, a.shape[1]:] = d.max(axis=(2, 3))
    return out


def head_inputs(features: np.ndarray, kind: str, trunk: Optional[np.ndarray] = None,
                maps: Optional[np.ndarray] = None) -> np.ndarray:
    """A whole stream -> head inputs [T, head_input_dim] (float32). features: pooled F_A [T, D]; for
    "trunk+fa-motion" also `trunk` [T, trunk_dim] (pooled trunk) and `maps` [T, D, h, w] (F_A)."""
    _check(kind)
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise EdgeVadError(f"head inputs are built from a [frames, dim] feature stream, got shape {list(x.shape)}")
    if kind == FEATURE:
        return x
    if kind == TRUNK_FA_MOTION:
        if trunk is None or maps is None:
            raise EdgeVadError(f"head input {kind!r} needs the trunk features and the F_A maps of the stream")
        return np.concatenate([np.asarray(trunk, dtype=np.float32).reshape(len(x), -1), map_motion(maps)], axis=1)
    diff = np.abs(np.diff(x, axis=0, prepend=x[:1]))  # row 0: |x0 - x0| = 0
    motion = np.maximum(diff, np.concatenate([diff[:1], diff[:-1]]))  # row 0: max(0, 0); row 1: max(d1, 0)
    return np.concatenate([x, motion], axis=1)


@dataclass(frozen=True, eq=False)
class MotionState:
    """What the streaming form carries: the previous frame's pooled feature and |difference| ("feature+motion"),
    or its F_A map ("trunk+fa-motion"); None at the start of a stream."""

    previous: Optional[np.ndarray] = None
    previous_diff: Optional[np.ndarray] = None


def head_input_step(feature: np.ndarray, state: MotionState, kind: str, trunk: Optional[np.ndarray] = None,
                    fa_map: Optional[np.ndarray] = None) -> Tuple[np.ndarray, MotionState]:
    """Streaming form of `head_inputs`: one frame's outputs -> (its head input, the new state)."""
    _check(kind)
    f = np.asarray(feature, dtype=np.float32).reshape(-1)
    if kind == FEATURE:
        return f, state
    if kind == TRUNK_FA_MOTION:
        if trunk is None or fa_map is None:
            raise EdgeVadError(f"head input {kind!r} needs the frame's trunk feature and F_A map")
        a = np.asarray(fa_map, dtype=np.float32)
        if state.previous is None:
            motion = np.zeros(2 * a.shape[0], np.float32)
        else:
            d = np.abs(a - state.previous)
            motion = np.concatenate([d.mean(axis=(1, 2)), d.max(axis=(1, 2))])
        return np.concatenate([np.asarray(trunk, np.float32).reshape(-1), motion]), MotionState(a)
    diff = np.zeros_like(f) if state.previous is None else np.abs(f - state.previous)
    motion = diff if state.previous_diff is None else np.maximum(diff, state.previous_diff)
    return np.concatenate([f, motion]), MotionState(f, diff)
