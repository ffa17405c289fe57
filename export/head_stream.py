"""Streams of head inputs for the export checks, built the way the device builds them (edge_vad.head_input).

The coarse heads read per-frame vectors made from the backbone's outputs: the pooled F_A ("feature"), and for
"trunk+fa-motion" also the pooled trunk ("trunk_feature") and the F_A map ("heatmap"). The parity and int8
checks feed the heads streams of REAL per-frame outputs (of the parity / calibration frames), cycled to the
length they need with 10 % multiplicative noise so no two steps repeat (export/parity.feature_sequence's rule).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from edge_vad.head_input import TRUNK_FA_MOTION, head_inputs


def nchw_maps(maps: np.ndarray, channels: int) -> np.ndarray:
    """F_A maps [N, C, h, w] from either layout ([N, h, w, C] is what an int8 TFLite backbone returns)."""
    m = np.asarray(maps, np.float32)
    return m if m.shape[1] == channels else m.transpose(0, 3, 1, 2)


def frames_head_inputs(outputs: Sequence[Mapping[str, np.ndarray]], kind: str, channels: int) -> np.ndarray:
    """Per-frame backbone outputs (batch 1 each), in stream order -> head inputs [N, dim]."""
    feature = np.concatenate([np.asarray(o["feature"], np.float32).reshape(1, -1) for o in outputs])
    if kind != TRUNK_FA_MOTION:
        return head_inputs(feature, kind)
    trunk = np.concatenate([np.asarray(o["trunk_feature"], np.float32).reshape(1, -1) for o in outputs])
    maps = np.concatenate([nchw_maps(o["heatmap"], channels) for o in outputs])
    return head_inputs(feature, kind, trunk, maps)


def stream_head_inputs(ref: Mapping[str, np.ndarray], length: int, kind: str, channels: int,
                       seed: int = 0) -> np.ndarray:
    """A [length, dim] head-input stream from real outputs `ref` (arrays [N, 1, ...] per output name)."""
    rng = np.random.default_rng(seed)
    n = len(ref["feature"])
    idx = np.arange(length) % n

    def noisy(a: np.ndarray) -> np.ndarray:
        base = np.asarray(a, np.float32).reshape((n,) + np.shape(a)[2:])[idx]
        return (base * (1.0 + 0.1 * rng.standard_normal(base.shape))).astype(np.float32)

    if kind != TRUNK_FA_MOTION:
        return head_inputs(noisy(ref["feature"]), kind)
    maps = nchw_maps(noisy(ref["heatmap"]), channels)
    return head_inputs(maps.mean(axis=(2, 3)), kind, noisy(ref["trunk_feature"]), maps)
