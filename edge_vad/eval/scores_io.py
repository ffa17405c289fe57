"""Read the anomaly scores that `edge-vad eval` grades, and pair their videos with the ground truth's.

Scores file (.npz, no pickled objects):

- ``<video>``          -> 1-D float array: one anomaly score per frame, or per snippet of N frames
  when loaded with ``snippet=N`` (a ``[T, 1]`` column is accepted too).
- ``<video>::classes`` -> optional ``[T, C]`` float array of class scores (same T as ``<video>``),
  for temporal-detection mAP; requires
- ``__classes__``      -> 1-D string array of the C class names, e.g. ``np.array(["normal", "fighting", ...])``.
  Names are compared after lower-casing and dropping non-alphanumerics, XD codes (B1, G...)
  are accepted; the normal class (``normal``/``A``) is ignored by mAP.

Per-snippet scores are expanded the field's way: each snippet score repeated N times.
``<video>`` may be spelt any way :func:`edge_vad.eval.ground_truth.canonical_name` reconciles
(``Abuse/Abuse028_x264.mp4``, ``Abuse028_x264__0``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Tuple

import numpy as np

from edge_vad.errors import EdgeVadError
from edge_vad.eval.ground_truth import canonical_name

CLASSES_KEY = "__classes__"
CLASS_SUFFIX = "::classes"


@dataclass(frozen=True)
class ScoreSet:
    """Scores expanded to frames. class_scores / class_names are empty without class scores."""

    source: Path
    snippet: int
    scores: Mapping[str, np.ndarray]  # video -> float64 [frames]
    class_scores: Mapping[str, np.ndarray]  # video -> float64 [frames, C]
    class_names: Tuple[str, ...]


def _numeric(path: Path, key: str, arr: np.ndarray, ndim: int, what: str) -> np.ndarray:
    if ndim == 1 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != ndim or arr.dtype.kind not in "biuf" or arr.shape[0] == 0:
        raise EdgeVadError(f"{path}: {key!r} has shape {arr.shape} and dtype {arr.dtype}; expected {what}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise EdgeVadError(f"{path}: {key!r} contains NaN or infinite scores; fix the scoring run that wrote it")
    return arr


def load_scores(path: Path, snippet: int = 1) -> ScoreSet:
    """Load a scores .npz and expand per-snippet scores to frames (each repeated `snippet` times)."""
    path = Path(path)
    if snippet < 1:
        raise EdgeVadError(f"--snippet must be >= 1 (got {snippet}); use 1 for per-frame scores, 16 for the field's snippets")
    if not path.is_file():
        raise EdgeVadError(f"scores file not found: {path}; pass the .npz written by `edge-vad score`")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a bad file
        raise EdgeVadError(f"{path}: cannot read as .npz ({exc}); pass an .npz of video name -> scores") from None
    try:
        with data:
            names_arr = np.asarray(data[CLASSES_KEY]) if CLASSES_KEY in data.files else None
            raw = {key: np.asarray(data[key]) for key in data.files if key != CLASSES_KEY}
    except ValueError as exc:  # object arrays need pickle, which we refuse for files from elsewhere
        raise EdgeVadError(f"{path}: {exc}; store plain numeric arrays (and a string array for {CLASSES_KEY!r})") from None
    scores: Dict[str, np.ndarray] = {}
    class_raw: Dict[str, np.ndarray] = {}
    for key, arr in raw.items():
        if key.endswith(CLASS_SUFFIX):
            class_raw[key[: -len(CLASS_SUFFIX)]] = arr
        else:
            scores[key] = _numeric(path, key, arr, 1, "a non-empty 1-D array of per-frame or per-snippet scores")
    if not scores:
        raise EdgeVadError(f"{path}: no score arrays found; expected entries video name -> 1-D scores")

    class_names: Tuple[str, ...] = ()
    class_scores: Dict[str, np.ndarray] = {}
    if class_raw:
        if names_arr is None or names_arr.ndim != 1 or names_arr.dtype.kind not in "US" or names_arr.size == 0:
            raise EdgeVadError(f"{path}: has '<video>{CLASS_SUFFIX}' arrays but no 1-D string array {CLASSES_KEY!r}; add the class names")
        class_names = tuple(str(n) for n in names_arr.astype(str))
        for video, arr in class_raw.items():
            if video not in scores:
                raise EdgeVadError(f"{path}: {video + CLASS_SUFFIX!r} has no matching {video!r} anomaly scores; add them")
            arr = _numeric(path, video + CLASS_SUFFIX, arr, 2, f"a [T, {len(class_names)}] array of class scores")
            if arr.shape != (len(scores[video]), len(class_names)):
                raise EdgeVadError(
                    f"{path}: {video + CLASS_SUFFIX!r} has shape {arr.shape}, expected "
                    f"({len(scores[video])}, {len(class_names)}) = (len of {video!r}, len of {CLASSES_KEY!r})"
                )
            class_scores[video] = np.repeat(arr, snippet, axis=0)
    elif names_arr is not None:
        raise EdgeVadError(f"{path}: has {CLASSES_KEY!r} but no '<video>{CLASS_SUFFIX}' arrays; add them or drop {CLASSES_KEY!r}")
    expanded = {video: np.repeat(arr, snippet) for video, arr in scores.items()}
    return ScoreSet(path, snippet, expanded, class_scores, class_names)


def _index(names: Iterable[str], where: str) -> Dict[str, str]:
    index: Dict[str, str] = {}
    for name in names:
        key = canonical_name(name)
        if key in index:
            raise EdgeVadError(f"{where}: {index[key]!r} and {name!r} name the same video; keep one entry per video")
        index[key] = name
    return index


def match_videos(gt_names: Iterable[str], score_names: Iterable[str]) -> Tuple[List[Tuple[str, str]], List[str], List[str]]:
    """Pair ground-truth and score names by canonical name.

    Returns (pairs of (gt name, score name), GT names without scores, score names without GT).
    """
    gt_index = _index(gt_names, "ground truth")
    sc_index = _index(score_names, "scores")
    pairs = [(gt_index[k], sc_index[k]) for k in gt_index if k in sc_index]
    gt_only = [gt_index[k] for k in gt_index if k not in sc_index]
    scores_only = [sc_index[k] for k in sc_index if k not in gt_index]
    return pairs, gt_only, scores_only
