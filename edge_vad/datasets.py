"""The real data we train, validate and benchmark on (../shared/data; see its README).

- fight-surv: 2-second CCTV clips, each fight from first to last frame or not at all. Clips cut
  from the same source video are kept in the same split (videos.txt groups them), so a
  validation clip never shares a scene with a training clip.
- UCSD Ped2: normal training videos; test videos with per-frame labels.
- Stitching clips end to end gives long streams with exact frame labels.
"""

from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_vad.errors import EdgeVadError

log = logging.getLogger(__name__)

PED2_VALIDATION_VIDEOS = ("07", "08")  # held out from training (issue 3)
VALIDATION_FRACTION = 0.2  # share of fight-surv source videos held out for validation (issue 3)
SPLIT_SEED = 20261126  # fixed so the split is the same on every machine


@dataclass(frozen=True)
class Clip:
    """One labelled video: a file or a folder of frames. `frame_labels` is None where only the
    video-level label is known."""

    name: str
    path: Path
    label: int  # video-level label: 1 = anomalous
    group: str  # source video (clips of one group never straddle a split)
    frame_labels: Optional[np.ndarray] = None


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise EdgeVadError(f"{what} not found at {path}; point --data at the folder that holds ../shared/data")
    return path


def _source_groups(videos_txt: Path) -> Dict[str, str]:
    """Clip stem -> index of the source video it was cut from."""
    groups: Dict[str, str] = {}
    current = "ungrouped"
    for line in videos_txt.read_text().splitlines():
        line = line.strip()
        if line.startswith("http"):
            current = line
        elif ":" in line:
            groups[line.split(":", 1)[0].strip()] = current
    return groups


def fight_surv_clips(data_root: Path) -> List[Clip]:
    """All fight-surv clips with labels (fight = 1) and source-video groups."""
    root = _require_dir(Path(data_root) / "fight-surv", "fight-surv data")
    groups = _source_groups(root / "videos.txt") if (root / "videos.txt").is_file() else {}
    clips = []
    for sub, label in (("fight", 1), ("noFight", 0)):
        for path in sorted(_require_dir(root / sub, f"fight-surv/{sub}").iterdir()):
            if path.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov"):
                clips.append(Clip(path.stem, path, label, groups.get(path.stem, path.stem)))
    return clips


def split_by_group(clips: Sequence[Clip], val_fraction: float = VALIDATION_FRACTION,
                   seed: int = SPLIT_SEED) -> Tuple[List[Clip], List[Clip]]:
    """(train, validation): whole source-video groups go to validation until it holds at least
    `val_fraction` of the clips of each label."""
    rng = random.Random(seed)
    by_group: Dict[str, List[Clip]] = {}
    for clip in clips:
        by_group.setdefault(clip.group, []).append(clip)
    names = sorted(by_group)
    rng.shuffle(names)
    wanted = {lab: val_fraction * sum(c.label == lab for c in clips) for lab in (0, 1)}
    taken = {0: 0, 1: 0}
    val_groups = set()
    for name in names:
        members = by_group[name]
        gain = {lab: sum(c.label == lab for c in members) for lab in (0, 1)}
        # take a group only if it helps a label that is still short and does not overshoot badly
        if any(taken[lab] < wanted[lab] and gain[lab] for lab in (0, 1)) and all(
            taken[lab] + gain[lab] <= wanted[lab] * 1.5 + 2 for lab in (0, 1)
        ):
            val_groups.add(name)
            for lab in (0, 1):
                taken[lab] += gain[lab]
        if all(taken[lab] >= wanted[lab] for lab in (0, 1)):
            break
    train = [c for c in clips if c.group not in val_groups]
    val = [c for c in clips if c.group in val_groups]
    return train, val


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def image_files(folder: Path) -> List[Path]:
    return sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif")),
                  key=_natural_key)


def ped2_videos(data_root: Path) -> Tuple[List[Clip], List[Clip]]:
    """(training videos, all normal; test videos with frame labels, label = any anomalous frame)."""
    root = _require_dir(Path(data_root) / "ucsd-ped2", "UCSD Ped2 data")
    train = [Clip(f"ped2_train_{p.name}", p, 0, f"ped2_train_{p.name}")
             for p in sorted(_require_dir(root / "training" / "frames", "Ped2 training frames").iterdir()) if p.is_dir()]
    labels = np.load(root / "test_frame_labels.npz")
    test = []
    for p in sorted(_require_dir(root / "testing" / "frames", "Ped2 testing frames").iterdir()):
        if p.is_dir():
            frame_labels = labels[p.name].astype(np.uint8)
            test.append(Clip(f"ped2_test_{p.name}", p, int(frame_labels.any()), f"ped2_test_{p.name}", frame_labels))
    return train, test


def split_ped2(test: Sequence[Clip]) -> Tuple[List[Clip], List[Clip]]:
    """Ped2 test videos: (weakly labelled training bags, validation videos 07-08)."""
    val_names = {f"ped2_test_{v}" for v in PED2_VALIDATION_VIDEOS}
    return [c for c in test if c.name not in val_names], [c for c in test if c.name in val_names]


@dataclass(frozen=True)
class StitchedStream:
    path: Path
    fps: float
    frame_labels: np.ndarray  # one 0/1 label per written frame
    segments: list  # (clip name, first frame, end frame exclusive, label)


def stitch_clips(clips: Sequence[Clip], out_path: Path, size: Tuple[int, int] = (640, 360),
                 fps: float = 25.0) -> StitchedStream:
    """Write clips end to end as one video at a fixed size and rate (frames are resampled by
    time so every clip keeps its duration). Written to a temp name, then renamed."""
    import cv2

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.stem + ".partial" + out_path.suffix)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise EdgeVadError(f"cannot write {out_path}: OpenCV has no mp4v encoder here")
    labels: List[int] = []
    segments = []
    try:
        for clip in clips:
            cap = cv2.VideoCapture(str(clip.path))
            src_fps = cap.get(cv2.CAP_PROP_FPS) or fps
            frames = []
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame)
            cap.release()
            if not frames:
                raise EdgeVadError(f"{clip.path}: no frame could be decoded; remove it from the list")
            n_out = max(1, int(round(len(frames) / src_fps * fps)))
            start = len(labels)
            for i in range(n_out):
                src = min(len(frames) - 1, int(i * src_fps / fps))
                writer.write(cv2.resize(frames[src], size, interpolation=cv2.INTER_AREA))
                if clip.frame_labels is not None:
                    labels.append(int(clip.frame_labels[min(src, len(clip.frame_labels) - 1)]))
                else:
                    labels.append(clip.label)
            segments.append((clip.name, start, len(labels), clip.label))
    finally:
        writer.release()
    os.replace(tmp, out_path)
    return StitchedStream(out_path, fps, np.asarray(labels, dtype=np.uint8), segments)
