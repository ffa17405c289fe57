"""Cross-validation folds that predict footage nobody has seen (issue 15): by source video, never by clip.

- fight-surv: 5 folds of whole source videos (`videos.txt` groups; a clip missing from it is its own group),
  stratified by label (sklearn StratifiedGroupKFold, seeded), so no scene is on both sides of a fold.
- UCSD Ped2: leave-videos-out over the 8 labelled test videos, two consecutive videos per fold (01-02, 03-04,
  05-06, 07-08: every pair has normal and anomalous frames; 08 alone has no normal frame), in folds 0-3. The
  16 normal training videos are training data in every fold (they share the camera with the test videos, as a
  user's normal footage would; no held-out test video is among them).
Fold k trains ONE model on everything outside fold k and is scored on fold k's fight clips, its Ped2 test
videos and a stream of its fight clips stitched end to end. `check_no_leak` proves the grouping holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_vad.datasets import Clip, fight_surv_clips, ped2_videos
from edge_vad.errors import EdgeVadError

N_FOLDS = 5
FOLD_SEED = 15  # StratifiedGroupKFold shuffle seed (fixed: the same folds on every machine)
PED2_TEST_FOLDS = (("01", "02"), ("03", "04"), ("05", "06"), ("07", "08"))  # held-out Ped2 test videos per fold
STREAM_SEED = 7  # order of held-out clips in a fold's stitched stream


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple  # Clips to fit on (fight-surv clips of the other folds, Ped2 training + other test videos)
    fight: tuple  # held-out fight-surv clips
    ped2: tuple  # held-out Ped2 test videos (with frame labels); empty in fold 4

    @property
    def held_out(self) -> tuple:
        return self.fight + self.ped2


def fight_fold_of(clips: Sequence[Clip], n_folds: int = N_FOLDS, seed: int = FOLD_SEED) -> dict[str, int]:
    """Clip name -> fold, whole source videos per fold, labels stratified."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.array([c.label for c in clips])
    groups = np.array([c.group for c in clips])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = {}
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(clips)), y, groups)):
        for i in test:
            fold[clips[i].name] = k
    return fold


def ped2_fold_of(n_folds: int = N_FOLDS) -> dict[str, int]:
    if len(PED2_TEST_FOLDS) > n_folds:
        raise EdgeVadError(f"{len(PED2_TEST_FOLDS)} Ped2 folds do not fit in {n_folds} folds")
    return {f"ped2_test_{v}": k for k, pair in enumerate(PED2_TEST_FOLDS) for v in pair}


def make_folds(fight: Sequence[Clip], ped2_train: Sequence[Clip], ped2_test: Sequence[Clip],
               n_folds: int = N_FOLDS, seed: int = FOLD_SEED) -> list[Fold]:
    fight_fold = fight_fold_of(fight, n_folds, seed)
    ped2_fold = ped2_fold_of(n_folds)
    unknown = [c.name for c in ped2_test if c.name not in ped2_fold]
    if unknown:
        raise EdgeVadError(f"Ped2 test videos {unknown} have no fold; extend PED2_TEST_FOLDS")
    folds = []
    for k in range(n_folds):
        held_fight = tuple(c for c in fight if fight_fold[c.name] == k)
        held_ped2 = tuple(c for c in ped2_test if ped2_fold[c.name] == k)
        train = tuple([c for c in fight if fight_fold[c.name] != k] + list(ped2_train)
                      + [c for c in ped2_test if ped2_fold[c.name] != k])
        folds.append(Fold(k, train, held_fight, held_ped2))
    check_no_leak(folds)
    return folds


def check_no_leak(folds: Sequence[Fold]) -> None:
    """Raise when a source video (group) is on both sides of a fold, or a clip is held out twice or never."""
    held: dict[str, int] = {}
    for fold in folds:
        train_groups = {c.group for c in fold.train}
        for clip in fold.held_out:
            if clip.group in train_groups:
                raise EdgeVadError(f"fold {fold.index}: source video {clip.group} of {clip.name} is also in training")
            if clip.name in held:
                raise EdgeVadError(f"{clip.name} is held out in folds {held[clip.name]} and {fold.index}")
            held[clip.name] = fold.index


def default_folds(data_root: Path) -> list[Fold]:
    """The folds of the shared data (../shared/data)."""
    ped2_train, ped2_test = ped2_videos(Path(data_root))
    return make_folds(fight_surv_clips(Path(data_root)), ped2_train, ped2_test)


def stream_order(clips: Sequence[Clip], seed: int = STREAM_SEED) -> list[Clip]:
    """A fold's held-out clips in the seeded order they are stitched in."""
    rng = np.random.default_rng(seed)
    return [clips[i] for i in rng.permutation(len(clips))]


def frame_labels(clip: Clip, n: int) -> np.ndarray:
    """Per-frame 0/1 labels of a clip's first n frames (the clip label where no frame labels exist)."""
    if clip.frame_labels is not None:
        return np.asarray(clip.frame_labels[:n], dtype=np.uint8)
    return np.full(n, clip.label, dtype=np.uint8)
