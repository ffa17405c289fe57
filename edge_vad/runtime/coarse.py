"""The coarse stage on the device: backbone + QACM student on every frame. No torch: only the bundle's artifacts.

    coarse = CoarseStage(models)
    state = coarse.initial_state()
    state, out = coarse.step(state, frame.image)               # out.score in [0, 1]

Everything carried from one frame to the next is explicit data (DESIGN.md): the QACM feature window is
`CoarseState`.

Coarse score: backbone -> `feature` (pooled F_A); the QACM student reads the last W features (oldest first)
and gives a logit; score = sigmoid(logit). At stream start the FIRST feature is repeated to fill the window,
as edge_vad_models.coarse_heads.QACMStudent.forward pads (so frame t's score equals the trained model's
score at t on the whole sequence).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

import numpy as np

from edge_vad.bundle.manifest import Artifact
from edge_vad.errors import EdgeVadError
from edge_vad.head_input import TRUNK_FA_MOTION, MotionState, head_input_dim, head_input_step
from edge_vad.runtime.heatmap import evidence_heatmap, grey_input, grey_motion, map_change
from edge_vad.runtime.loaded_models import ModelSet
from edge_vad.runtime.metrics import Metrics
from edge_vad.runtime.preprocess import Preprocessor

log = logging.getLogger("edge_vad.stages")

BACKBONE_OUTPUTS = ("feature", "heatmap", "trunk_feature")  # edge_vad_export.onnx_export
HEATMAP_CHANNEL_MEAN = "channel-mean"  # how the F_A channels become one heatmap when no weights are given
HEATMAP_WEIGHTED = "channel-weights"
HEATMAP_FA_MOTION = "fa-motion"  # edge_vad.runtime.heatmap: F_A's change x grey-level motion (bundles since issue 15)


@dataclass(frozen=True, eq=False)
class CoarseState:
    """What the coarse stage carries between frames: the last W head inputs, oldest first (None before the
    first frame), how many frames it has seen, and the frame-difference state of the head input."""

    window: Optional[np.ndarray] = None
    frames: int = 0
    motion: MotionState = MotionState()
    grey: Optional[np.ndarray] = None  # the previous frame's grey model input ("fa-motion" heatmaps only)


def push_window(state: CoarseState, feature: np.ndarray, window: int) -> CoarseState:
    """Slide a feature into the window. The first feature fills the whole window (QACMStudent.forward's pad)."""
    f = np.asarray(feature, dtype=np.float32).reshape(1, -1)
    if state.window is None:
        win = np.repeat(f, window, axis=0)
    else:
        win = np.concatenate([state.window[1:], f], axis=0)
    return CoarseState(win, state.frames + 1, state.motion, state.grey)


@dataclass(frozen=True, eq=False)
class CoarseOutput:
    score: float  # sigmoid(logit), the coarse anomaly score
    logit: float
    feature: np.ndarray  # [D] pooled F_A (the QACM reads edge_vad.head_input of these)
    trunk_feature: np.ndarray  # [T] pooled backbone trunk
    heatmap: np.ndarray  # [h, w] F_A channels combined (mean, or manifest weights)
    fa_map: Optional[np.ndarray] = None  # [C, h, w] F_A itself (scene calibration reads it per region)


def sigmoid(x: float) -> float:
    # numerically safe in both tails
    return float(1.0 / (1.0 + np.exp(-x))) if x >= 0 else float(np.exp(x) / (1.0 + np.exp(x)))


def declared_layout(art: Artifact, name: str, outputs: bool = True) -> str:
    infos = art.outputs if outputs else art.inputs
    return next((t.layout for t in infos if t.name == name), "")


class CoarseStage:
    """Backbone + QACM on one frame. Stateless itself: the caller holds the CoarseState."""

    def __init__(self, models: ModelSet, metrics: Optional[Metrics] = None,
                 heatmap_weights: Optional[np.ndarray] = None):
        backbone, head = models.get("coarse_backbone"), models.get("coarse_head")
        if backbone is None or head is None:
            raise EdgeVadError("the coarse stage needs a backbone and a QACM head; re-export the bundle")
        manifest = models.manifest
        self.backbone, self.head, self.metrics = backbone, head, metrics
        art = manifest.artifacts[backbone.plan.artifact]
        missing = [n for n in BACKBONE_OUTPUTS if n not in {s.name for s in backbone.outputs}]
        if missing or len(backbone.inputs) != 1:
            raise EdgeVadError(f"{art.file}: expected one image input and outputs {list(BACKBONE_OUTPUTS)}, missing "
                               f"{missing}; re-export the bundle")
        spec = backbone.inputs[0]
        self.preprocess = Preprocessor(manifest.preprocessing, spec, declared_layout(art, spec.name, outputs=False))
        self.window = int(manifest.artifacts[head.plan.artifact].window or manifest.coarse.window or 0)
        if self.window < 1:
            raise EdgeVadError(f"bundle {models.bundle_dir}: the QACM artifact records no window W; re-export the bundle")
        self.head_input = head.inputs[0]
        size = int(np.prod([d for d in self.head_input.shape if d is not None]))
        self.head_input_kind = manifest.coarse.head_input
        width = head_input_dim(self.head_input_kind, manifest.coarse.feature_dim, manifest.coarse.trunk_dim)
        if size != self.window * width:
            raise EdgeVadError(f"QACM input {self.head_input.describe()} does not hold {self.window} x {width} "
                               f"head inputs ({self.head_input_kind}); re-export the bundle")
        heat_layout = declared_layout(art, "heatmap")
        heat_shape = next(s.shape for s in backbone.outputs if s.name == "heatmap")
        self.heat_channel_axis = 3 if heat_layout == "NHWC" or (not heat_layout and heat_shape[-1] == manifest.coarse.feature_dim) else 1
        if heatmap_weights is None:
            heatmap_weights = manifest.coarse.heatmap_weights
        self.heatmap_weights = None if heatmap_weights is None else np.asarray(heatmap_weights, np.float32).reshape(-1)
        if self.heatmap_weights is not None and self.heatmap_weights.shape[0] != manifest.coarse.feature_dim:
            raise EdgeVadError(f"bundle {models.bundle_dir}: {self.heatmap_weights.shape[0]} heatmap weights for "
                               f"{manifest.coarse.feature_dim} F_A channels; re-export the bundle")
        self.heatmap_method = HEATMAP_CHANNEL_MEAN if self.heatmap_weights is None else HEATMAP_WEIGHTED
        if manifest.coarse.heatmap_kind == HEATMAP_FA_MOTION:
            if self.head_input_kind != TRUNK_FA_MOTION:
                raise EdgeVadError(f"bundle {models.bundle_dir}: heatmap {HEATMAP_FA_MOTION!r} needs head input "
                                   f"{TRUNK_FA_MOTION!r}; re-export the bundle")
            self.heatmap_method = HEATMAP_FA_MOTION
        log.info("coarse stage: %s input via %s; QACM window %d; heatmap = F_A %s", spec.name, self.preprocess.mode,
                 self.window, self.heatmap_method)

    def initial_state(self) -> CoarseState:
        return CoarseState()

    def _timed(self, stage: str):
        return self.metrics.stage(stage) if self.metrics is not None else nullcontext()

    def backbone_outputs(self, image_bgr: np.ndarray) -> Dict[str, np.ndarray]:
        with self._timed("preprocess"):
            feed = self.preprocess(image_bgr)
        with self._timed("coarse"):
            return self.backbone.infer(feed, raw_inputs=self.preprocess.raw)

    def heatmap(self, heat: np.ndarray) -> np.ndarray:
        maps = np.moveaxis(heat[0], self.heat_channel_axis - 1, -1)  # [h, w, C]
        if self.heatmap_weights is None:
            return maps.mean(axis=-1)
        return np.maximum(maps @ self.heatmap_weights, 0.0)  # the explain module's rule (class_activation)

    def qacm(self, state: CoarseState, feature: np.ndarray, trunk: Optional[np.ndarray] = None,
             fa_map: Optional[np.ndarray] = None) -> Tuple[CoarseState, float]:
        """One frame's outputs -> (new state, head logit): builds the head input, slides the window. `trunk` and
        `fa_map` ([C, h, w]) only for head input "trunk+fa-motion"."""
        x, motion = head_input_step(feature, state.motion, self.head_input_kind, trunk, fa_map)
        state = push_window(replace(state, motion=motion), x, self.window)
        with self._timed("qacm"):
            feed = {self.head_input.name: state.window.reshape(  # type: ignore[union-attr]
                tuple(d if d is not None else 1 for d in self.head_input.shape))}
            logit = float(next(iter(self.head.infer(feed).values())).reshape(-1)[0])
        return state, logit

    def head_parts(self, out: Dict[str, np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One frame's backbone outputs -> (pooled F_A feature, trunk feature, F_A map [C, h, w]): what `qacm` reads."""
        fa_map = np.moveaxis(out["heatmap"][0], self.heat_channel_axis - 1, 0)
        return out["feature"].reshape(-1), out["trunk_feature"].reshape(-1), fa_map

    def step(self, state: CoarseState, image_bgr: np.ndarray) -> Tuple[CoarseState, CoarseOutput]:
        out = self.backbone_outputs(image_bgr)
        feature, trunk, fa_map = self.head_parts(out)
        previous_map, previous_grey = state.motion.previous, state.grey
        state, logit = self.qacm(state, feature, trunk, fa_map)
        if self.heatmap_method == HEATMAP_FA_MOTION:
            pre = self.preprocess.pre
            grey = self.preprocess.last_grey()  # this frame's, resized by backbone_outputs just now
            if grey is None:
                grey = grey_input(image_bgr, pre.size, pre.interpolation)
            heat = evidence_heatmap(map_change(fa_map, previous_map), grey_motion(grey, previous_grey))
            state = replace(state, grey=grey)
        else:
            heat = self.heatmap(out["heatmap"])
        return state, CoarseOutput(
            score=sigmoid(logit), logit=logit, feature=feature, trunk_feature=trunk, heatmap=heat, fa_map=fa_map)
