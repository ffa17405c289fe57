"""Per-camera scene model (issue 15): what normal looks like and how it moves, region by region, for ONE camera.

`edge-vad calibrate` watches a camera's normal footage through the deployed bundle and fits, per region of a
GRID x GRID split of the model's input frame:
- motion: the mean absolute grey-level change from the previous frame in the region (the model's own 224 x 224
  input, so every camera is measured at one scale), standardised by the region's mean and spread on the
  footage: traffic lanes move a lot, walls never;
- appearance: the backbone's F_A map pooled to the region, projected on the scene's first APPEARANCE_DIMS
  principal components (fitted on the footage), and the Mahalanobis distance of that vector to the region's
  Gaussian (Ledoit-Wolf shrunk covariance: a region sees a few thousand frames at most), standardised the same
  way.
A region's evidence is log(1 + max(0, z_motion)) + APPEARANCE_WEIGHT * log(1 + max(0, z_appearance)) (the
log tames regions that almost never change on the footage, where any change is dozens of deviations); the
frame's scene z is the largest region's evidence, standardised on the footage. The bundle's logit is
standardised on the same footage; the calibrated logit is

    z = (z_bundle + z_scene) / sqrt(2) - Z_OFFSET,    score = sigmoid(z)

so both sources count the same whatever their units, and a frame as unusual as the footage's typical frame
scores sigmoid(-Z_OFFSET), near 0. The region map (evidence per region) is what the heatmap shows.
Appearance counts a quarter: on the one scene we can check (UCSD Ped2, whose anomalies are mostly fast movers)
motion alone ranked frames best, and the calibrated frame AUC fell as appearance weighed more (weights 0, 0.1,
0.25, 0.5, 1: 0.957, 0.954, 0.951, 0.942, 0.926, mean of the cross-validation folds; the weight was chosen
looking at these Ped2 folds, there being no other labelled scene). It stays in the model for anomalies that do
not move (something left on a walkway); `edge-vad calibrate --appearance-weight` sets it per camera.

Everything here is numpy (and scikit-learn's Ledoit-Wolf for the fit): it runs on the device, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_vad.errors import EdgeVadError

GRID = 7  # regions per side: 32 x 32 pixels of the 224 x 224 input, about the size of a person at 20 m
APPEARANCE_DIMS = 16  # principal components of the F_A channels kept per scene
APPEARANCE_WEIGHT = 0.25  # weight of the appearance evidence against the motion evidence (module doc)
Z_OFFSET = 4.0  # calibrated logit = blended z - Z_OFFSET: footage-typical frames score sigmoid(-4) = 0.018
MIN_FRAMES = 64  # fewer normal frames than this cannot give a region a covariance worth the name
STANDARDISE_FOLDS = 4  # time blocks for the out-of-sample standardisation of appearance distances
SPREAD_FLOOR = 1e-3  # lower bound of a standardisation spread (a region that never changed on the footage)


def region_means(maps: np.ndarray, grid: int = GRID) -> np.ndarray:
    """[..., H, W] -> [..., grid * grid]: means over a grid x grid split (H, W need not divide evenly)."""
    a = np.asarray(maps, dtype=np.float32)
    h, w = a.shape[-2:]
    ys = np.linspace(0, h, grid + 1).round().astype(int)
    xs = np.linspace(0, w, grid + 1).round().astype(int)
    if min(np.diff(ys).min(), np.diff(xs).min()) < 1:
        raise EdgeVadError(f"a {h}x{w} map cannot be split into {grid}x{grid} regions")
    out = [a[..., ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean(axis=(-2, -1)) for i in range(grid) for j in range(grid)]
    return np.stack(out, axis=-1)


@dataclass(frozen=True, eq=False)
class SceneState:
    """What the scene features carry from one frame to the next: the previous grey input frame."""

    previous: Optional[np.ndarray] = None


def frame_features(grey: np.ndarray, fa: np.ndarray, state: SceneState,
                   grid: int = GRID) -> Tuple[np.ndarray, np.ndarray, SceneState]:
    """One frame -> (motion [R], appearance [R, C], new state). grey: [S, S] uint8 model input; fa: [C, h, w]."""
    g = np.asarray(grey, dtype=np.float32)
    motion = np.zeros(grid * grid, np.float32) if state.previous is None else region_means(np.abs(g - state.previous), grid)
    appearance = region_means(np.asarray(fa, dtype=np.float32), grid).T  # [R, C]
    return motion, appearance, SceneState(g)


@dataclass
class SceneModel:
    """A fitted scene: arrays only (saved as one .npz), applied by `evidence` / `calibrated_logit`."""

    pca_mean: np.ndarray  # [C]
    pca_components: np.ndarray  # [k, C]
    app_mean: np.ndarray  # [R, k]
    app_precision: np.ndarray  # [R, k, k]
    app_dist_mean: np.ndarray  # [R]
    app_dist_spread: np.ndarray  # [R]
    motion_mean: np.ndarray  # [R]
    motion_spread: np.ndarray  # [R]
    bundle_mean: float
    bundle_spread: float
    grid: int = GRID
    scene_mean: float = 0.0  # of the largest region evidence on the footage
    scene_spread: float = 1.0
    appearance_weight: float = APPEARANCE_WEIGHT

    ARRAYS = ("pca_mean", "pca_components", "app_mean", "app_precision", "app_dist_mean", "app_dist_spread",
              "motion_mean", "motion_spread")

    def appearance_distance(self, appearance: np.ndarray) -> np.ndarray:
        """[..., R, C] -> [..., R] Mahalanobis distance of each region's projected appearance."""
        x = (np.asarray(appearance, np.float32) - self.pca_mean) @ self.pca_components.T - self.app_mean
        return np.sqrt(np.maximum(np.einsum("...rk,rkl,...rl->...r", x, self.app_precision, x), 0.0))

    def evidence(self, motion: np.ndarray, appearance: np.ndarray) -> np.ndarray:
        """[..., R] per-region standardised deviation from the scene (motion + appearance)."""
        zm = (np.asarray(motion, np.float32) - self.motion_mean) / self.motion_spread
        za = (self.appearance_distance(appearance) - self.app_dist_mean) / self.app_dist_spread
        return np.log1p(np.maximum(zm, 0.0)) + self.appearance_weight * np.log1p(np.maximum(za, 0.0))

    def scene_z(self, evidence: np.ndarray) -> np.ndarray:
        return (np.asarray(evidence).max(axis=-1) - self.scene_mean) / self.scene_spread

    def calibrated_logit(self, bundle_logit, evidence: np.ndarray):
        zb = (np.asarray(bundle_logit, np.float64) - self.bundle_mean) / self.bundle_spread
        return (zb + self.scene_z(evidence)) / np.sqrt(2.0) - Z_OFFSET

    def to_arrays(self) -> Dict[str, np.ndarray]:
        arrays = {k: np.asarray(getattr(self, k)) for k in self.ARRAYS}
        arrays["scalars"] = np.asarray([self.bundle_mean, self.bundle_spread, self.grid, self.scene_mean,
                                        self.scene_spread, self.appearance_weight], np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "SceneModel":
        missing = [k for k in (*cls.ARRAYS, "scalars") if k not in arrays]
        if missing:
            raise EdgeVadError(f"scene model lacks {missing}; run `edge-vad calibrate` again")
        scalars = [float(v) for v in arrays["scalars"]]
        if len(scalars) != 6:
            raise EdgeVadError("scene model from another edge-vad version; run `edge-vad calibrate` again")
        mean, spread, grid, scene_mean, scene_spread, weight = scalars
        return cls(**{k: np.asarray(arrays[k], np.float32) for k in cls.ARRAYS}, bundle_mean=mean,
                   bundle_spread=spread, grid=int(grid), scene_mean=scene_mean, scene_spread=scene_spread,
                   appearance_weight=weight)


def _spread(x: np.ndarray, axis: int = 0) -> np.ndarray:
    return np.maximum(np.asarray(x).std(axis=axis), SPREAD_FLOOR)


@dataclass
class Footage:
    """Per-frame observations of normal footage, one list entry per continuous stream (file, folder, camera run)."""

    motion: List[np.ndarray] = field(default_factory=list)  # [T, R] per stream
    appearance: List[np.ndarray] = field(default_factory=list)  # [T, R, C]
    logits: List[np.ndarray] = field(default_factory=list)  # [T]

    @property
    def frames(self) -> int:
        return int(sum(len(m) for m in self.motion))

    def add_stream(self, motion: Sequence[np.ndarray], appearance: Sequence[np.ndarray], logits: Sequence[float]) -> None:
        if len(motion):
            self.motion.append(np.asarray(motion, np.float32))
            self.appearance.append(np.asarray(appearance, np.float32))
            self.logits.append(np.asarray(logits, np.float64))

    def subset(self, keep) -> "Footage":
        """The streams' frames where `keep(stream index, frame indices)` is True (a boolean mask per stream)."""
        out = Footage()
        for i, (m, a, z) in enumerate(zip(self.motion, self.appearance, self.logits)):
            mask = keep(i, np.arange(len(m)))
            out.add_stream(m[mask], a[mask], z[mask])
        return out


def _fit_regions(proj: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per region: Ledoit-Wolf mean [R, k] and precision [R, k, k] of projected appearance [N, R, k]."""
    from sklearn.covariance import LedoitWolf

    regions, k = proj.shape[1], proj.shape[2]
    mean = np.empty((regions, k), np.float32)
    precision = np.empty((regions, k, k), np.float32)
    for r in range(regions):
        lw = LedoitWolf().fit(proj[:, r])
        mean[r], precision[r] = lw.location_, lw.precision_
    return mean, precision


def _blocks(footage: Footage, folds: int) -> np.ndarray:
    """Fold of every frame: each stream cut into `folds` contiguous blocks (block i of every stream -> fold i)."""
    return np.concatenate([np.minimum(np.arange(len(m)) * folds // max(len(m), 1), folds - 1) for m in footage.motion])


def fit_scene_model(footage: Footage, dims: int = APPEARANCE_DIMS, grid: int = GRID, seed: int = 0,
                    folds: int = STANDARDISE_FOLDS, appearance_weight: float = APPEARANCE_WEIGHT) -> SceneModel:
    """Fit the scene from normal footage (module doc).

    The standardisation of the appearance distances uses OUT-OF-SAMPLE distances: each of `folds` time blocks
    is measured against region Gaussians fitted without it. In-sample Mahalanobis distances are biased low
    (the Gaussian has seen the point; with k = 16 dimensions and a few hundred frames, by a factor of about
    2), so a model standardised on them would call every new frame unusual."""
    if footage.frames < MIN_FRAMES:
        raise EdgeVadError(f"scene calibration needs at least {MIN_FRAMES} frames of normal footage, got "
                           f"{footage.frames}; watch longer (--frames / --duration) or add sources")
    motion = np.concatenate(footage.motion)
    appearance = np.concatenate(footage.appearance)  # [N, R, C]
    regions, channels = appearance.shape[1:]
    flat = appearance.reshape(-1, channels)
    rng = np.random.default_rng(seed)
    sample = flat[rng.choice(len(flat), min(len(flat), 50_000), replace=False)]
    mean = sample.mean(axis=0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
    components = vt[:min(dims, channels)]
    proj = (appearance - mean) @ components.T  # [N, R, k]
    app_mean, precision = _fit_regions(proj)
    logits = np.concatenate(footage.logits)
    model = SceneModel(mean.astype(np.float32), components.astype(np.float32), app_mean, precision,
                       np.zeros(regions, np.float32), np.ones(regions, np.float32),
                       motion.mean(axis=0), _spread(motion), float(logits.mean()), float(max(logits.std(), SPREAD_FLOOR)),
                       grid, appearance_weight=appearance_weight)
    block = _blocks(footage, folds)
    dist = np.empty(proj.shape[:2], np.float32)
    for f in range(folds):
        held = block == f
        m, p = _fit_regions(proj[~held])
        d = proj[held] - m
        dist[held] = np.sqrt(np.maximum(np.einsum("nrk,rkl,nrl->nr", d, p, d), 0.0))
    model.app_dist_mean, model.app_dist_spread = dist.mean(axis=0), _spread(dist)
    zm = (motion - model.motion_mean) / model.motion_spread
    za = (dist - model.app_dist_mean) / model.app_dist_spread
    top = (np.log1p(np.maximum(zm, 0.0)) + model.appearance_weight * np.log1p(np.maximum(za, 0.0))).max(axis=1)
    model.scene_mean, model.scene_spread = float(top.mean()), float(max(top.std(), SPREAD_FLOOR))
    return model
