"""t-SNE of the fine stage's video features and its class text embeddings (paper Fig. 8).

Points: one per 16-frame snippet (SNIPPET_FRAMES) of each video the checkpoint's cross-validation folds hold out
(edge_vad_models.explain.held_out_clips: all folds, or one with `fold`; the shipped fine stage is refitted on all
of them, so for it they are training videos): the fine stage's
per-frame video features (FineStage.video_features over the whole video, causal, L2-normalised) averaged over
the snippet and re-normalised. Per snippet rather than per video because the fight-surv clips are
2 s long (1-4 snippets) while Ped2 videos hold normal and anomalous stretches: a snippet carries one class.
Colour = the snippet's class (majority of its frames' classes: edge_vad_models.explain.frame_classes).
Stars: each class's text embedding as the model uses it without descriptions (the description-averaged row of
the frozen table, normalised). t-SNE (scikit-learn, cosine metric, PCA init, fixed seed) embeds both together.

Image-side inputs are the pooled backbone trunk features (the 1280-d features the default fine stage reads),
taken from the training cache runs/cache/frames/<video>.trunk.npy when present, else computed from the video.
Besides the figure, a JSON next to it gives two numbers a person can compare across checkpoints: the share of
snippets whose nearest class text (cosine) is their own class, and the silhouette of the snippet features by
class (cosine).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from edge_vad.constants import SNIPPET_FRAMES
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import write_json_atomic
from edge_vad_models.explain import (DEFAULT_TRUNK_CACHE, TrunkSource, frame_classes, held_out_clips, save_figure,
                                     spread)
from edge_vad_models.fine.prompt import average_embeddings

log = logging.getLogger(__name__)

METHOD = ("one point per 16-frame snippet of each held-out video of the cross-validation folds: mean of the fine "
          "stage's L2-normalised "
          "per-frame video features, re-normalised; class = majority class of the snippet's frames; stars = "
          "description-averaged class text embeddings of the frozen table; sklearn TSNE(metric=cosine, init=pca)")


def snippet_features(video: np.ndarray, classes: np.ndarray, snippet: int = SNIPPET_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame features [T, D] and classes [T] -> snippet features [S, D] (normalised means) and classes [S]."""
    feats, labels = [], []
    for start in range(0, len(video), snippet):
        mean = video[start:start + snippet].mean(axis=0)
        feats.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        labels.append(int(np.bincount(classes[start:start + snippet]).argmax()))
    return np.stack(feats).astype(np.float32), np.asarray(labels, dtype=np.int64)


def class_text_embeddings(model) -> np.ndarray:
    """[C, D] normalised description-averaged class texts of a fine stage with a frozen table."""
    if not model.text_frozen:
        raise EdgeVadError("the fine stage's text side is not frozen; load it with load_fine")
    with torch.no_grad():
        return F.normalize(average_embeddings(model.text_table), dim=-1).numpy()


def tsne_embed(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of `points` [N, D] (cosine metric); perplexity capped for small N."""
    from sklearn.manifold import TSNE

    n = len(points)
    if n < 4:
        raise EdgeVadError(f"t-SNE needs at least 4 points, got {n}; use more videos (--limit)")
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed).fit_transform(
        points.astype(np.float64))


def plot_tsne(xy_points: np.ndarray, point_classes: np.ndarray, xy_text: np.ndarray, class_names: Sequence[str],
              path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
        sel = point_classes == c
        ax.scatter(xy_points[sel, 0], xy_points[sel, 1], s=14, alpha=0.7, color=colours(c),
                   label=f"{name} ({int(sel.sum())} snippets)")
        # Text points are outliers to the snippet cloud and t-SNE may put them on top of each other: later
        # classes get smaller stars drawn above (nested, all visible) and every star is named.
        ax.scatter(xy_text[c, 0], xy_text[c, 1], marker="*", s=520 * 0.7 ** c, color=colours(c),
                   edgecolors="black", linewidths=1.0, zorder=5 + c)
        ax.annotate(name, (xy_text[c, 0], xy_text[c, 1]), xytext=(8, 8 - 11 * c), textcoords="offset points",
                    fontsize=8, color=colours(c), zorder=10)
    ax.scatter([], [], marker="*", s=120, color="white", edgecolors="black", label="class text embedding")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    # Legend outside the axes: inside, it can hide a star.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, frameon=False)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def explain_tsne(out: Path, checkpoint: Union[str, Path] = "default", data_root: Path = Path("../shared/data"),
                 cache_dir: Optional[Path] = DEFAULT_TRUNK_CACHE, limit: Optional[int] = None, seed: int = 0,
                 fold: Optional[int] = None) -> dict:
    """Write the figure `out` (PNG) and `out` with suffix .json (the numbers); returns that summary. Videos: the
    held-out videos of fold `fold` (None: of every fold), `limit` of them evenly spread."""
    from sklearn.metrics import silhouette_score

    from edge_vad_models.checkpoint import default_checkpoint_dir
    from edge_vad_models.training.fine import load_fine

    folder = default_checkpoint_dir() if str(checkpoint) == "default" else Path(checkpoint)
    model, meta = load_fine(folder)
    class_names = list(meta["class_names"])
    clips = spread(held_out_clips(folder, data_root, fold), limit)
    trunk = TrunkSource(cache_dir, _trunk_runner)
    feats, classes, per_video = [], [], {}
    with torch.no_grad():
        for clip in clips:
            pooled = np.asarray(trunk(clip), dtype=np.float32).mean(axis=(2, 3))
            video = model.video_features(torch.from_numpy(pooled)[None])[0].numpy()
            f, c = snippet_features(video, frame_classes(clip, len(pooled), class_names))
            feats.append(f)
            classes.append(c)
            per_video[clip.name] = len(f)
    points, point_classes = np.concatenate(feats), np.concatenate(classes)
    text = class_text_embeddings(model)
    xy = tsne_embed(np.concatenate([points, text]), seed)
    n = len(points)
    nearest = (points @ text.T).argmax(axis=1)
    present = np.unique(point_classes)
    summary = {
        "figure": str(out),
        "method": METHOD,
        "class_names": class_names,
        "n_videos": len(clips),
        "n_snippets": int(n),
        "snippets_per_class": {name: int((point_classes == c).sum()) for c, name in enumerate(class_names)},
        "nearest_text_accuracy": float((nearest == point_classes).mean()),
        "text_cosine": np.round(text @ text.T, 4).tolist(),
        "silhouette_cosine": (float(silhouette_score(points, point_classes, metric="cosine"))
                              if 1 < len(present) < n else None),
        "videos": [c.name for c in clips],
        "fold": fold,
        "videos_computed_without_cache": trunk.computed,
        "seed": seed,
    }
    plot_tsne(xy[:n], point_classes, xy[n:], class_names, Path(out),
              f"fine-stage snippet features (dots) and class texts (stars), {len(clips)} held-out videos"
              + ("" if fold is None else f" of fold {fold}"))
    write_json_atomic(Path(out).with_suffix(".json"), summary)
    return summary


def _trunk_runner():
    from edge_vad_models.backbones import AdjustMobileNet
    from edge_vad_models.features import TrunkRunner

    return TrunkRunner(AdjustMobileNet().eval())
