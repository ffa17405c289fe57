"""LIME-style surrogate R^2 of the coarse and fine stages (paper Table IX; LIME: Ribeiro et al., KDD 2016).

For one video with per-frame features X [T, d]:
1. split the frames into S contiguous temporal segments (np.array_split; S = min(segments, T));
2. draw M binary masks z in {0, 1}^S, each bit Bernoulli(1/2), the first mask all ones (LIME's sampling);
3. perturbed input: frames of switched-off segments replaced by the video's mean feature (`fill="mean"`, the
   default: an "uninformative" frame that stays in the feature distribution; `fill="zeros"` is the other choice);
4. f(z) = the model's output on the perturbed input;
5. weight each mask by LIME's kernel on the cosine distance to the all-ones mask:
   pi(z) = sqrt(exp(-d(z)^2 / width^2)), width 0.25 (LIME's image default), d = 1 - cos(z, 1) (1 for z = 0);
6. fit a weighted ridge regression f(z) ~ z (sklearn Ridge, alpha 1, LIME's default surrogate);
7. R^2 = sklearn r2_score(f, surrogate(z), sample_weight=pi) on the same masks (LIME's `score`), clipped to [0, 1].
A video whose output does not change under any mask has no defined R^2; it is counted, not averaged.

Outputs explained:
- coarse: the deployed student's video score = mean of its k highest per-frame probabilities, k = max(1, T // 16)
  (the MIL top-k convention the heads are trained with). The perturbed per-frame features are what the head
  input is built from: pooled F_A for "feature" / "feature+motion" checkpoints (the motion part is rebuilt
  from the perturbed features, as on the device); for "trunk+fa-motion" checkpoints the head input rows
  themselves ([pooled trunk, mean and max |F_A(t) - F_A(t-1)|]), since the F_A change comes from maps that a
  pooled feature cannot rebuild: a switched-off frame's trunk feature and F_A change become the video's mean;
- fine: the fine stage's video probability of the class it predicts for the unperturbed video, on pooled trunk
  features; a switched-off frame's description becomes the table's generic fallback row ("no description").
The paper measures on XD-Violence, which is not available here: we use the videos the checkpoint's
cross-validation folds hold out (edge_vad_models.explain.held_out_clips; all folds, or one with `fold`). The
shipped models are refitted on all of them after cross-validation, so for those models they are training videos.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from edge_vad.constants import MIL_TOPK_DIVISOR
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import write_json_atomic
from edge_vad.head_input import FEATURE, TRUNK_FA_MOTION, head_inputs
from edge_vad_models.explain import DEFAULT_TRUNK_CACHE, TrunkSource, held_out_clips, spread

log = logging.getLogger(__name__)

FILLS = ("mean", "zeros")
PREDICT_BATCH = 32  # perturbed videos per forward pass
CONSTANT_OUTPUT = 1e-9  # output spread below this: the model ignores every segment, R^2 is undefined

# predict(perturbed features [m, T, d], kept frames [m, T] bool) -> model output [m]
Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LimeConfig:
    segments: int = 8
    samples: int = 256
    kernel_width: float = 0.25  # LIME's default for images (lime_image.LimeImageExplainer)
    ridge_alpha: float = 1.0  # LIME's default surrogate: Ridge(alpha=1)
    fill: str = "mean"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.segments < 2 or self.samples < 4 or self.kernel_width <= 0 or self.ridge_alpha < 0:
            raise EdgeVadError(f"LIME needs segments >= 2, samples >= 4, kernel_width > 0, ridge_alpha >= 0; got "
                               f"{self.segments}, {self.samples}, {self.kernel_width}, {self.ridge_alpha}")
        if self.fill not in FILLS:
            raise EdgeVadError(f"unknown fill {self.fill!r}; choose one of {', '.join(FILLS)}")


@dataclass
class LimeFit:
    r2: Optional[float]  # clipped to [0, 1]; None when the output never changed
    r2_raw: Optional[float]
    output_range: float
    coefficients: list  # surrogate weight per segment


def sample_masks(n_segments: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """[n_samples, n_segments] 0/1 masks, row 0 all ones (the unperturbed video)."""
    masks = rng.integers(0, 2, size=(n_samples, n_segments)).astype(np.float64)
    masks[0] = 1.0
    return masks


def lime_weights(masks: np.ndarray, kernel_width: float) -> np.ndarray:
    """LIME's kernel on the cosine distance of each mask to the all-ones mask."""
    norms = np.linalg.norm(masks, axis=1)
    cos = np.where(norms > 0, masks.sum(axis=1) / np.maximum(norms, 1e-12) / np.sqrt(masks.shape[1]), 0.0)
    distance = 1.0 - cos
    return np.sqrt(np.exp(-(distance ** 2) / kernel_width ** 2))


def frame_keep(masks: np.ndarray, n_frames: int) -> np.ndarray:
    """Segment masks [M, S] -> per-frame keep [M, T] bool (contiguous segments, np.array_split sizes)."""
    segment_of_frame = np.concatenate([np.full(len(chunk), s) for s, chunk in
                                       enumerate(np.array_split(np.arange(n_frames), masks.shape[1]))])
    return masks[:, segment_of_frame].astype(bool)


def perturb(features: np.ndarray, keep: np.ndarray, fill: str) -> np.ndarray:
    """[T, d] features, keep [m, T] -> [m, T, d] with switched-off frames replaced by the fill."""
    filler = features.mean(axis=0) if fill == "mean" else np.zeros(features.shape[1], dtype=features.dtype)
    return np.where(keep[:, :, None], features[None], filler[None, None]).astype(np.float32)


def surrogate_r2(masks: np.ndarray, outputs: np.ndarray, cfg: LimeConfig) -> LimeFit:
    """Weighted ridge f(z) ~ z and its weighted R^2 on the same masks."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    weights = lime_weights(masks, cfg.kernel_width)
    spread_ = float(outputs.max() - outputs.min())
    ridge = Ridge(alpha=cfg.ridge_alpha).fit(masks, outputs, sample_weight=weights)
    if spread_ < CONSTANT_OUTPUT:
        return LimeFit(None, None, spread_, ridge.coef_.tolist())
    raw = float(r2_score(outputs, ridge.predict(masks), sample_weight=weights))
    return LimeFit(float(np.clip(raw, 0.0, 1.0)), raw, spread_, ridge.coef_.tolist())


def lime_r2(features: np.ndarray, predict: Predictor, cfg: LimeConfig = LimeConfig(),
            rng: Optional[np.random.Generator] = None) -> LimeFit:
    """Surrogate R^2 of `predict` around one video's frame features [T, d] (module doc)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) < 2:
        raise EdgeVadError(f"LIME needs frame features [T >= 2, d], got {list(features.shape)}")
    rng = rng if rng is not None else np.random.default_rng(cfg.seed)
    masks = sample_masks(min(cfg.segments, len(features)), cfg.samples, rng)
    keep = frame_keep(masks, len(features))
    outputs = np.concatenate([np.asarray(predict(perturb(features, keep[i:i + PREDICT_BATCH], cfg.fill),
                                                 keep[i:i + PREDICT_BATCH]), dtype=np.float64).reshape(-1)
                              for i in range(0, len(masks), PREDICT_BATCH)])
    if outputs.shape != (len(masks),):
        raise EdgeVadError(f"the predictor returned {outputs.shape[0]} outputs for {len(masks)} perturbed videos")
    return surrogate_r2(masks, outputs, cfg)


# ---- the two stages ----------------------------------------------------------------------------------------------

def coarse_predictor(student: torch.nn.Module, head_input: str = FEATURE) -> Predictor:
    """Student video score: mean of the top-k per-frame probabilities, k = max(1, T // 16). The perturbed pooled
    features become the student's input as on the device (edge_vad.head_input); for "trunk+fa-motion" the
    perturbed rows already are its input (module doc)."""
    def predict(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
        inputs = x if head_input == TRUNK_FA_MOTION else np.stack([head_inputs(v, head_input) for v in x])
        with torch.no_grad():
            probs = torch.sigmoid(student(torch.from_numpy(inputs)))
        k = max(1, probs.shape[1] // MIL_TOPK_DIVISOR)
        return probs.topk(k, dim=1).values.mean(dim=1).numpy()

    return predict


def fine_predictor(model, rows: np.ndarray, fallback_row: int, target: int) -> Predictor:
    """Fine-stage probability of class `target`; switched-off frames get the fallback description row."""
    def predict(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
        ids = np.where(keep, rows[None], fallback_row)
        with torch.no_grad():
            out = model(torch.from_numpy(x), torch.from_numpy(ids))
        return out.video_probs[:, target].numpy()

    return predict


def _summary(fits: dict) -> dict:
    values = [f.r2 for f in fits.values() if f.r2 is not None]
    return {
        "r2_mean": float(np.mean(values)) if values else None,
        "r2_median": float(np.median(values)) if values else None,
        "r2_min": float(np.min(values)) if values else None,
        "r2_max": float(np.max(values)) if values else None,
        "n_videos": len(values),
        "n_constant_output": len(fits) - len(values),
        "per_video": {name: asdict(f) | {"coefficients": [round(c, 6) for c in f.coefficients]}
                      for name, f in fits.items()},
    }


def explain_lime(n_videos: Optional[int], json_out: Path, checkpoint: Union[str, Path] = "default",
                 data_root: Path = Path("../shared/data"), cache_dir: Optional[Path] = DEFAULT_TRUNK_CACHE,
                 cfg: LimeConfig = LimeConfig(), fold: Optional[int] = None) -> dict:
    """Surrogate R^2 of both stages over `n_videos` held-out videos of fold `fold` (None: of every fold), spread
    over the list; writes `json_out`."""
    from edge_vad_models.checkpoint import default_checkpoint_dir, load_coarse
    from edge_vad_models.features import TrunkRunner
    from edge_vad_models.training.fine import load_fine

    folder = default_checkpoint_dir() if str(checkpoint) == "default" else Path(checkpoint)
    ckpt = load_coarse(folder)
    if ckpt.student is None:
        raise EdgeVadError(f"{folder} has no distilled student; LIME explains the deployed coarse head")
    fine, meta = load_fine(folder) if (folder / "fine.pt").is_file() else (None, None)
    clips = spread(held_out_clips(folder, data_root, fold), n_videos)
    trunk = TrunkSource(cache_dir, lambda: TrunkRunner(ckpt.backbone))
    rng = np.random.default_rng(cfg.seed)
    coarse_fits, fine_fits, fine_targets = {}, {}, {}
    for clip in clips:
        maps = torch.from_numpy(np.asarray(trunk(clip), dtype=np.float32))
        with torch.no_grad():
            fa_maps = ckpt.backbone.branch(maps).numpy()
            pooled = maps.mean(dim=(2, 3))
            ids = ckpt.backbone.classifier(pooled).argmax(dim=1).numpy()
        fa = fa_maps.mean(axis=(2, 3))
        # trunk+fa-motion: perturb the head input rows (module doc); otherwise the pooled F_A it is built from
        coarse_x = (head_inputs(fa, TRUNK_FA_MOTION, pooled.numpy(), fa_maps) if ckpt.head_input == TRUNK_FA_MOTION
                    else fa)
        coarse_fits[clip.name] = lime_r2(coarse_x, coarse_predictor(ckpt.student, ckpt.head_input), cfg, rng)
        if fine is not None:
            rows = np.asarray(meta["description_rows"], dtype=np.int64)[ids]
            with torch.no_grad():
                probs = fine(pooled[None], torch.from_numpy(rows)[None]).video_probs[0].numpy()
            target = int(probs.argmax())  # explain the class the model picks for the whole video
            fine_targets[clip.name] = meta["class_names"][target]
            predict = fine_predictor(fine, rows, int(meta["fallback_row"]), target)
            fine_fits[clip.name] = lime_r2(pooled.numpy(), predict, cfg, rng)
    report = {
        "method": {
            "perturbation": f"{cfg.segments} contiguous temporal segments per video; random binary masks "
                            f"(Bernoulli 1/2, first all ones); switched-off frames replaced by the video's "
                            f"{'mean feature' if cfg.fill == 'mean' else 'zero vector'}",
            "kernel": f"sqrt(exp(-d^2 / {cfg.kernel_width}^2)), d = cosine distance to the all-ones mask",
            "surrogate": f"sklearn Ridge(alpha={cfg.ridge_alpha}) on the masks, weighted by the kernel",
            "r2": "sklearn r2_score(model output, surrogate, sample_weight=kernel) on the perturbation set, "
                  "clipped to [0, 1] per video; r2_mean = mean over videos",
            "coarse_output": f"{ckpt.raw.get('student_kind', 'qacm')} student video score: mean of the top "
                             "max(1, T // 16) frame probabilities, perturbing "
                             + ("the head input rows (pooled trunk + F_A motion)" if ckpt.head_input == TRUNK_FA_MOTION
                                else "pooled F_A features"),
            "fine_output": "fine-stage video probability of the class predicted on the unperturbed video (pooled "
                           "trunk features; switched-off frames get the generic fallback description)",
            "data": "videos held out by the checkpoint's cross-validation folds"
                    + ("" if fold is None else f" (fold {fold})") + "; the shipped models are refitted on all "
                    "videos, so for them these are training videos (the paper used XD-Violence, not available here)",
            **asdict(cfg),
        },
        "videos": [c.name for c in clips],
        "fold": fold,
        "head_input": ckpt.head_input,
        "coarse": _summary(coarse_fits),
        "fine": (_summary(fine_fits) | {"explained_class": fine_targets}) if fine is not None else None,
        "paper_table_ix": {"coarse": 0.648, "fine": 0.537, "dataset": "XD-Violence"},
        "coarse_sha256": ckpt.sha256,
        "videos_computed_without_cache": trunk.computed,
    }
    write_json_atomic(Path(json_out), report)
    return report
