"""The coarse stage with a camera's scene calibration: the same `initial_state` / `step` contract as CoarseStage,
so the pipeline runs it unchanged; the score is the calibrated one and the heatmap the scene's region evidence.

    stage = CalibratedCoarse(coarse, load_calibration(camera_dir, manifest))
    state = stage.initial_state()
    state, out = stage.step(state, frame.image)     # out.score: calibrated; out.heatmap: the scene's evidence

`observe` is the one place that turns a frame into what the scene model reads (grey model input, F_A map,
bundle logit): `edge-vad calibrate` fits on exactly what the running stage later applies the model to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np

from edge_vad.config import Config, GateConfig
from edge_vad.runtime.calibration_store import Calibration
from edge_vad.runtime.coarse import CoarseOutput, CoarseStage, CoarseState, sigmoid
from edge_vad.runtime.heatmap import evidence_heatmap, grey_input, grey_motion
from edge_vad.runtime.scene_calibration import SceneState, frame_features

log = logging.getLogger("edge_vad.calibration")

HEATMAP_SCENE = "scene"  # snapshot file names say how the map was made (see pipeline._snapshot)


@dataclass(frozen=True, eq=False)
class CalibratedState:
    coarse: CoarseState = CoarseState()
    scene: SceneState = SceneState()


@dataclass(frozen=True, eq=False)
class Observation:
    output: CoarseOutput  # the bundle's own output for the frame
    motion: np.ndarray  # [R] region grey-level change
    appearance: np.ndarray  # [R, C] region F_A
    fine_motion: np.ndarray  # [MOTION_GRID, MOTION_GRID] grey-level change (what the heatmap sharpens to)


def observe(coarse: CoarseStage, state: CalibratedState, image_bgr: np.ndarray,
            grid: int) -> Tuple[CalibratedState, Observation]:
    cstate, out = coarse.step(state.coarse, image_bgr)
    if out.fa_map is None:  # pragma: no cover - CoarseStage always sets it
        raise RuntimeError("the coarse stage gave no F_A map")
    pre = coarse.preprocess.pre
    grey = cstate.grey if cstate.grey is not None else grey_input(image_bgr, pre.size, pre.interpolation)
    fine = grey_motion(grey, state.scene.previous)
    motion, appearance, sstate = frame_features(grey, out.fa_map, state.scene, grid)
    return CalibratedState(cstate, sstate), Observation(out, motion, appearance, fine)


class CalibratedCoarse:
    """CoarseStage + SceneModel (module doc). Stateless itself, like CoarseStage."""

    heatmap_method = HEATMAP_SCENE

    def __init__(self, coarse: CoarseStage, calibration: Calibration):
        self.coarse = coarse
        self.calibration = calibration
        self.model = calibration.model

    def initial_state(self) -> CalibratedState:
        return CalibratedState(self.coarse.initial_state(), SceneState())

    def step(self, state: CalibratedState, image_bgr: np.ndarray) -> Tuple[CalibratedState, CoarseOutput]:
        state, obs = observe(self.coarse, state, image_bgr, self.model.grid)
        evidence = self.model.evidence(obs.motion, obs.appearance)
        logit = float(self.model.calibrated_logit(obs.output.logit, evidence))
        grid = self.model.grid
        heat = evidence_heatmap(np.asarray(evidence, np.float32).reshape(grid, grid), obs.fine_motion)
        return state, replace(obs.output, score=sigmoid(logit), logit=logit, heatmap=heat)


def camera_stage(coarse: CoarseStage, calibration: Optional[Calibration]):
    """The stage one camera runs: the plain coarse stage, or it with the camera's calibration."""
    return coarse if calibration is None else CalibratedCoarse(coarse, calibration)


def camera_config(cfg: Config, user_gate: GateConfig, calibration: Optional[Calibration]) -> Config:
    """The run config for one camera: its calibration's gate thresholds, unless the user's own config sets
    thresholds (`user_gate`: the [gate] section as read, before the bundle's defaults filled it in)."""
    if calibration is None:
        return cfg
    if {"on_threshold", "off_threshold"} & user_gate.model_fields_set:
        log.info("camera %s: gate thresholds from the config (its calibration's are not used)", calibration.name)
        return cfg
    fitted = calibration.manifest.gate
    gate = GateConfig(**{**cfg.gate.model_dump(), "on_threshold": fitted.on_threshold,
                         "off_threshold": fitted.off_threshold})
    log.info("camera %s: gate on %.3f / off %.3f, from its calibration (%s)", calibration.name, gate.on_threshold,
             gate.off_threshold, fitted.rule)
    return cfg.model_copy(update={"gate": gate})
