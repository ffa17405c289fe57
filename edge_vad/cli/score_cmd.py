"""`edge-vad score`: batch-score videos offline with the on-device cascade; the .npz feeds `edge-vad eval`.

    edge-vad score clips/ more.mp4 ped2/testing/frames/01 --out scores.npz [--snippet 16] [--bundle DIR]

Inputs: a video file; a folder of videos (each video); a folder of images (one video, named after the
folder). Each video runs through the same Pipeline as `edge-vad run` (coarse stage on every frame, the gate,
the fine stage while it is open), with the fine stage run in line so nothing is dropped, and no events,
clips or snapshots.

Output (.npz, no pickled objects; keys as edge_vad.eval.scores_io reads them):
- ``<name>``          float32 [T]: the coarse score per frame (per snippet of N frames with --snippet N:
                      the mean of its frames; the last snippet may be shorter).
- ``<name>::classes`` float32 [T, C] and ``__classes__`` (the C class names), when the bundle has a fine stage
                      and --no-fine is not given, for every video (eval wants all or none). Per frame: where
                      the fine stage ran on the frame, or on an earlier frame of the same gate opening, p = its
                      class probabilities; anomaly class c scores s_t * p_c (coarse score times class
                      probability) and the normal class 1 - (sum of those); frames the fine stage never saw
                      score 1 for normal and 0 for every anomaly class (the cascade saw nothing anomalous).
Names are the file stem, or the image folder's name; two inputs with one name are an error. A damaged or
truncated video keeps the scores of the frames before the damage (with a warning). Written atomically.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_vad.bundle import resolve_bundle_dir, verify_bundle
from edge_vad.config import load_config, with_precision
from edge_vad.errors import EdgeVadError
from edge_vad.eval.scores_io import CLASS_SUFFIX, CLASSES_KEY
from edge_vad.fileio import atomic_target
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad.runtime.bundle_defaults import config_for_bundle
from edge_vad.runtime.coarse import CoarseStage
from edge_vad.runtime.fine_model import FineModel
from edge_vad.runtime.loaded_models import load_models
from edge_vad.runtime.pipeline import Pipeline
from edge_vad.runtime.report import ScoreLog
from edge_vad.sources import open_source
from edge_vad.sources.image_folder import IMAGE_EXTENSIONS

log = logging.getLogger("edge_vad.score")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")


@dataclass(frozen=True)
class ScoreInput:
    name: str
    path: Path


def expand_inputs(sources: Sequence[Path]) -> List[ScoreInput]:
    """Videos, folders of videos, folders of images -> named inputs (names unique)."""
    out: List[ScoreInput] = []
    for src in map(Path, sources):
        if src.is_dir():
            entries = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
            videos = [p for p in entries if p.suffix.lower() in VIDEO_SUFFIXES]
            if videos:
                out.extend(ScoreInput(p.stem, p) for p in videos)
            elif any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entries):
                out.append(ScoreInput(src.resolve().name, src))
            else:
                raise EdgeVadError(f"{src}: no videos ({', '.join(VIDEO_SUFFIXES[:4])}, ...) and no images in this "
                                   "folder; pass videos, folders of videos or folders of images")
        elif src.is_file():
            out.append(ScoreInput(src.stem, src))
        else:
            raise EdgeVadError(f"{src}: no such file or folder; check the path")
    seen: Dict[str, Path] = {}
    for item in out:
        if item.name in seen:
            raise EdgeVadError(f"{seen[item.name]} and {item.path} would both be scored as {item.name!r}; "
                               "score them in separate runs or rename one")
        seen[item.name] = item.path
    if not out:
        raise EdgeVadError("nothing to score; pass videos, folders of videos or folders of images")
    return out


def dense_scores(log_: ScoreLog) -> Tuple[np.ndarray, np.ndarray, List[Optional[np.ndarray]]]:
    """Per frame index 0..last: (score, gate open, fine probabilities or None), holding the previous value over
    frame numbers an image folder left unused."""
    n = int(log_.frames[-1]) + 1 if len(log_) else 0
    scores = np.zeros(n, np.float32)
    gate = np.zeros(n, bool)
    probs: List[Optional[np.ndarray]] = [None] * n
    rows = {int(f): i for i, f in enumerate(log_.frames)}
    score_arr, gate_arr = log_.score_array(), log_.gate_array()
    last_row = 0
    current: Optional[np.ndarray] = None
    for index in range(n):
        row = rows.get(index, last_row)
        last_row = row
        scores[index], gate[index] = score_arr[row], gate_arr[row]
        own = log_.probs.get(index)
        if own is not None:
            current = own
        elif not gate[index]:
            current = None  # a closed gate ends what the last opening's result says
        probs[index] = own if own is not None else (current if gate[index] else None)
    return scores, gate, probs


def class_scores(scores: np.ndarray, probs: List[Optional[np.ndarray]], n_classes: int, normal: int) -> np.ndarray:
    """[T, C] class scores by the rule in the module doc."""
    out = np.zeros((len(scores), n_classes), np.float32)
    out[:, normal] = 1.0
    anomaly = np.arange(n_classes) != normal
    for t, p in enumerate(probs):
        if p is not None:
            out[t, anomaly] = scores[t] * p[anomaly]
            out[t, normal] = 1.0 - out[t, anomaly].sum()
    return out


def per_snippet(values: np.ndarray, snippet: int) -> np.ndarray:
    """Mean over consecutive `snippet` frames along axis 0 (the last group may be shorter)."""
    if snippet == 1:
        return values
    starts = np.arange(0, len(values), snippet)
    return np.add.reduceat(values, starts, axis=0) / np.diff(np.append(starts, len(values)))[(...,) + (None,) * (values.ndim - 1)]


def save_npz_atomic(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:  # the temporary name keeps .npz, so np.savez writes exactly there
        np.savez(tmp, **arrays)


def score(sources: Sequence[Path], out: Path, bundle: Optional[Path] = None, backend: Optional[str] = None,
          snippet: int = 1, config: Optional[Path] = None, fine: bool = True, progress: bool = True,
          precision: Optional[str] = None) -> Dict[str, int]:
    """Score every input and write `out`; returns name -> frames scored."""
    if snippet < 1:
        raise EdgeVadError(f"--snippet must be >= 1, got {snippet}")
    out = Path(out)
    if out.suffix.lower() != ".npz":
        raise EdgeVadError(f"--out {out}: the scores file must end in .npz (what `edge-vad eval --scores` reads)")
    cfg = with_precision(load_config(config), precision)
    inputs = expand_inputs(sources)
    bundle_dir = resolve_bundle_dir(bundle or cfg.runtime.bundle)
    manifest = verify_bundle(bundle_dir).manifest
    cfg = config_for_bundle(cfg, manifest)
    use_fine = fine and cfg.fine.enabled and manifest.fine is not None
    plan = plan_backends(manifest, bundle_dir, backend or cfg.runtime.backend, cfg.runtime, fine=use_fine)
    from tqdm import tqdm

    arrays: Dict[str, np.ndarray] = {}
    counts: Dict[str, int] = {}
    models = load_models(bundle_dir, manifest, plan, lock=False)  # one thread: no lock needed
    try:
        log.info("scoring %d video(s) with %s", len(inputs), "; ".join(models.describe()))
        coarse = CoarseStage(models)
        fine_model = FineModel(models) if use_fine else None
        for item in inputs:
            with open_source(str(item.path), name=item.name) as src:
                score_log = ScoreLog()
                with tqdm(total=src.info.frame_count, desc=item.name, unit="frame", disable=not progress,
                          leave=False) as bar:
                    result = Pipeline(src, coarse, fine_model, cfg, score_log=score_log, fine_inline=True,
                                      snippet_frames=manifest.snippet_frames, on_frame=lambda _f: bar.update(1)).run()
            if result.error is not None:
                raise result.error
            if result.frames_missing:
                log.warning("%s: damaged or truncated; kept the scores of its first %d frames", item.path,
                            result.frames_scored)
            scores, _, probs = dense_scores(score_log)
            if len(scores) == 0:
                raise EdgeVadError(f"{item.path}: no frame could be scored")
            arrays[item.name] = per_snippet(scores, snippet).astype(np.float32)
            if fine_model is not None:
                cls = class_scores(scores, probs, len(manifest.classes), manifest.fine.normal_class)  # type: ignore[union-attr]
                arrays[item.name + CLASS_SUFFIX] = per_snippet(cls, snippet).astype(np.float32)
            counts[item.name] = len(scores)
    finally:
        models.close()
    if fine_model is not None:
        arrays[CLASSES_KEY] = np.asarray(manifest.classes, dtype=str)
    save_npz_atomic(out, arrays)
    log.info("wrote %s: %d video(s), %d frames%s", out, len(counts), sum(counts.values()),
             f", per snippet of {snippet}" if snippet > 1 else "")
    return counts
