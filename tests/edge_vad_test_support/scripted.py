"""A coarse stage with scripted scores, for pipeline tests where the gate must do exactly what the test says
(the real models are tested elsewhere). Same interface as edge_vad.runtime.coarse.CoarseStage."""

from __future__ import annotations

from typing import List

import numpy as np

from edge_vad.runtime.coarse import CoarseOutput, CoarseState


class ScriptedCoarse:
    heatmap_method = "channel-mean"

    def __init__(self, scores: List[float]):
        self.scores = scores

    def initial_state(self) -> CoarseState:
        return CoarseState()

    def step(self, state: CoarseState, image: np.ndarray):
        i = state.frames
        score = self.scores[min(i, len(self.scores) - 1)]
        heat = np.zeros((7, 7), np.float32)
        heat[i % 7, 3] = 1.0
        return CoarseState(None, i + 1), CoarseOutput(score, 0.0, np.full(4, i, np.float32), np.full(4, i, np.float32),
                                                      heat)
