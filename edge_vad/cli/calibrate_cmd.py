"""`edge-vad calibrate`: watch a camera's NORMAL footage through the deployed bundle and fit its scene model and gate.

    edge-vad calibrate --source rtsp://cam/stream --duration 600 --out cameras/front-door
    edge-vad calibrate --source ped2/training/frames/01 --source ped2/training/frames/02 ... --out cameras/ped2

Sources: files, image folders, folders of videos (each video), cameras / URIs; each is watched to its end unless
--frames (a total frame count) or --duration (total seconds of footage, media time) stops it first. A live
source needs one of them. Every frame runs through the bundle's coarse stage as `edge-vad run` runs it.

Fitting (edge_vad.runtime.scene_calibration, edge_vad.runtime.gate_fit):
1. the scene model on all frames;
2. the gate thresholds on CROSS-FITTED scores: the footage is cut in two halves (by time, per source), a
   scene model fitted on each half scores the other, so the thresholds see scores of footage their model has
   not seen, as the camera's future frames will be; the rule allows at most `--target-per-hour` false events
   per hour of footage (issue 15: 1), with a margin.
The folder (edge_vad.runtime.calibration_store) is written only when everything succeeded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from edge_vad.bundle import resolve_bundle_dir, verify_bundle
from edge_vad.config import GateConfig, load_config
from edge_vad.errors import EdgeVadError
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad.runtime.calibrated import CalibratedState, observe
from edge_vad.runtime.calibration_store import bundle_identity, write_calibration
from edge_vad.runtime.coarse import CoarseStage
from edge_vad.runtime.gate_fit import TARGET_PER_HOUR, Stream, fit_gate
from edge_vad.runtime.loaded_models import load_models
from edge_vad.runtime.scene_calibration import (APPEARANCE_DIMS, GRID, Footage, SceneModel, Z_OFFSET,
                                                fit_scene_model)
from edge_vad.sources import open_source

log = logging.getLogger("edge_vad.calibrate")

LIVE_KINDS = ("v4l2", "csi", "stream")  # edge_vad.sources kinds that never end by themselves
QUANTILES = (0.5, 0.9, 0.99, 0.999)


@dataclass
class Watched:
    """What calibrate saw: per source, per frame, the scene features, the bundle logit and the time."""

    names: List[str] = field(default_factory=list)
    footage: Footage = field(default_factory=Footage)
    times: List[np.ndarray] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return float(sum(Stream(np.zeros(len(t)), t).seconds for t in self.times))


def expand_sources(sources: Sequence[str]) -> List[str]:
    """A folder of videos is each of its videos; anything else (file, image folder, URI) is one source."""
    from edge_vad.cli.score_cmd import VIDEO_SUFFIXES

    out: List[str] = []
    for src in sources:
        p = Path(src)
        videos = sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_SUFFIXES) if p.is_dir() else []
        out.extend(str(v) for v in videos) if videos else out.append(src)
    return out


def watch(coarse: CoarseStage, sources: Sequence[str], frames: Optional[int], duration: Optional[float],
          grid: int = GRID, progress: bool = True) -> Watched:
    """Run every source through the coarse stage (until its end or the limits) and keep what the fit needs."""
    from tqdm import tqdm

    seen = Watched()
    total_frames, total_seconds = 0, 0.0
    with tqdm(total=frames, desc="watching", unit="frame", disable=not progress) as bar:
        for uri in sources:
            if (frames is not None and total_frames >= frames) or (duration is not None and total_seconds >= duration):
                break
            with open_source(uri) as src:
                if src.info.kind in LIVE_KINDS and frames is None and duration is None:
                    raise EdgeVadError(f"{uri} is a live source: pass --frames N or --duration SECONDS")
                state, motion, appearance, logits, times = CalibratedState(), [], [], [], []
                for frame in src.frames():
                    t = float(frame.timestamp_s)
                    if times and duration is not None and total_seconds + (t - times[0]) >= duration:
                        break
                    state, obs = observe(coarse, state, frame.image, grid)
                    motion.append(obs.motion)
                    appearance.append(obs.appearance)
                    logits.append(obs.output.logit)
                    times.append(t)
                    total_frames += 1
                    bar.update(1)
                    bar.set_postfix(source=Path(uri).name[:24], refresh=False)
                    if frames is not None and total_frames >= frames:
                        break
            if times:
                seen.names.append(uri)
                seen.footage.add_stream(motion, appearance, logits)
                seen.times.append(np.asarray(times, np.float64))
                total_seconds = seen.seconds
            log.info("%s: %d frames", uri, len(times))
    return seen


def calibrated_scores(model: SceneModel, footage: Footage) -> List[np.ndarray]:
    return [1.0 / (1.0 + np.exp(-model.calibrated_logit(z, model.evidence(m, a))))
            for m, a, z in zip(footage.motion, footage.appearance, footage.logits)]


def cross_fitted_scores(footage: Footage, dims: int, grid: int) -> List[np.ndarray]:
    """Per stream, the calibrated scores of each half from a model fitted on the other half (module doc)."""
    first = footage.subset(lambda i, idx: idx < len(idx) // 2)
    second = footage.subset(lambda i, idx: idx >= len(idx) // 2)
    if min(first.frames, second.frames) < 64:
        raise EdgeVadError(f"{footage.frames} frames are too few to fit and check a scene model; watch at least 128")
    a_scores = calibrated_scores(fit_scene_model(second, dims, grid), first)
    b_scores = calibrated_scores(fit_scene_model(first, dims, grid), second)
    return [np.concatenate([a, b]) for a, b in zip(a_scores, b_scores)]


def calibrate(sources: Sequence[str], out: Path, bundle: Optional[Path] = None, backend: Optional[str] = None,
              frames: Optional[int] = None, duration: Optional[float] = None, config: Optional[Path] = None,
              target_per_hour: float = TARGET_PER_HOUR, progress: bool = True) -> dict:
    """The whole command (module doc); returns the manifest fields written."""
    if not sources:
        raise EdgeVadError("pass at least one --source with normal footage of the camera")
    if frames is not None and frames < 128:
        raise EdgeVadError(f"--frames {frames}: a scene model needs at least 128 frames of normal footage")
    if duration is not None and duration <= 0:
        raise EdgeVadError(f"--duration must be positive seconds, got {duration}")
    if target_per_hour <= 0:
        raise EdgeVadError(f"--target-per-hour must be positive, got {target_per_hour}")
    cfg = load_config(config)
    bundle_dir = resolve_bundle_dir(bundle or cfg.runtime.bundle)
    manifest = verify_bundle(bundle_dir).manifest
    plan = plan_backends(manifest, bundle_dir, backend or cfg.runtime.backend, cfg.runtime, fine=False)
    models = load_models(bundle_dir, manifest, plan, lock=False)
    try:
        seen = watch(CoarseStage(models), expand_sources(sources), frames, duration, progress=progress)
    finally:
        models.close()
    footage = seen.footage
    if footage.frames < 128:
        raise EdgeVadError(f"only {footage.frames} frames could be read from the sources; a scene model needs at "
                           "least 128 frames of normal footage")
    log.info("fitting the scene model on %d frames (%.1f min)", footage.frames, seen.seconds / 60)
    model = fit_scene_model(footage, APPEARANCE_DIMS, GRID)
    held = cross_fitted_scores(footage, APPEARANCE_DIMS, GRID)
    gate_cfg = cfg.gate if "smoothing_frames" in cfg.gate.model_fields_set else GateConfig()
    gate = fit_gate([Stream(s, t) for s, t in zip(held, seen.times)], gate_cfg, target_per_hour)
    pooled = np.concatenate(held)
    fields = {"bundle_checkpoint_sha256": bundle_identity(manifest), "backend": plan.backend,
              "sources": seen.names, "frames": footage.frames, "seconds": round(seen.seconds, 3), "grid": GRID,
              "appearance_dims": APPEARANCE_DIMS, "gate": gate,
              "blend": f"score = sigmoid((z_bundle + z_scene) / sqrt(2) - {Z_OFFSET:g}); z_bundle: the bundle's logit "
                       "standardised on the footage; z_scene: the largest region evidence (motion + appearance, each "
                       "standardised per region on the footage)",
              "footage_scores": {f"q{q:g}": float(np.quantile(pooled, q)) for q in QUANTILES}}
    write_calibration(out, model, fields)
    log.info("calibration written to %s: gate on %.3f / off %.3f (%d event(s) on %.2f h of cross-fitted footage)",
             out, gate["on_threshold"], gate["off_threshold"], gate["events"], gate["hours"])
    return fields

