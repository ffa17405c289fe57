"""Settings a bundle fits to its own models, used wherever the user's config leaves them unset.

- Gate thresholds (manifest coarse.gate): a MIL-trained head's scores are not calibrated probabilities, so
  fixed 0.6 / 0.4 do not fit every model; the training recipe fits them (edge_vad/runtime/gate_fit.py, on out-of-fold
  scores of normal clips).
- Fine-stage frames per snippet (manifest fine.frames_per_snippet): what the fine head was trained on, e.g.
  every frame for lite0-minilm, one frame's CLIP feature per 16-frame snippet for clip-vit-b16.
A value the user's config sets always wins; `edge-vad run` logs where each came from.
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

from edge_vad.bundle.manifest import GateSuggestion, Manifest
from edge_vad.config import Config, GateConfig

log = logging.getLogger(__name__)


def with_bundle_thresholds(cfg: GateConfig, suggestion: Optional[GateSuggestion]) -> Tuple[GateConfig, str]:
    """The gate config to run with, and where its thresholds come from: the user's config when it sets
    on_threshold or off_threshold, else the bundle's suggestion, else the defaults."""
    if {"on_threshold", "off_threshold"} & cfg.model_fields_set:
        return cfg, "config"
    if suggestion is None:
        return cfg, "defaults (the bundle suggests none)"
    fitted = GateConfig(**{**cfg.model_dump(), "on_threshold": suggestion.on_threshold,
                           "off_threshold": suggestion.off_threshold})
    return fitted, f"bundle ({suggestion.rule})"


def config_for_bundle(cfg: Config, manifest: Manifest) -> Config:
    """`cfg` with the bundle's fitted settings where the user left them unset (logged)."""
    gate, origin = with_bundle_thresholds(cfg.gate, manifest.coarse.gate)
    log.info("gate: on %.3f / off %.3f, from %s", gate.on_threshold, gate.off_threshold, origin)
    fine = cfg.fine
    frames = manifest.fine.frames_per_snippet if manifest.fine is not None else None
    if frames is not None and "frames_per_update" not in fine.model_fields_set:
        fine = fine.model_copy(update={"frames_per_update": int(frames)})
        log.info("fine stage: %d frame(s) per snippet, from the bundle", frames)
    return cfg.model_copy(update={"gate": gate, "fine": fine})
