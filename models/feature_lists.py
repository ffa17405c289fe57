"""The field's feature lists: CSV files of `path,label`, as VadCLIP ships them for UCF-Crime and
XD-Violence (one row per feature file; a video may appear as several crops `name__0.npy`...).

Labels are read as: UCF-Crime class names ("Normal" is normal), XD-Violence codes ("A" is
normal; "B2-0-0" -> its first code, B2 = shooting), or anything else as a class name with
"normal" / "0" meaning normal. The paths in the published lists are absolute paths on their
authors' machines, so `root` re-roots them: the file name is looked up under root (and under
root/<class folder> for UCF's layout).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edge_vad.constants import XD_VIOLENCE_CODES
from edge_vad.errors import EdgeVadError

NORMAL_NAMES = {"normal", "a", "0", "normal_videos", "testing_normal_videos_anomaly"}


@dataclass(frozen=True)
class ListEntry:
    path: Path
    label: int  # 0 normal, 1 anomalous
    class_name: str  # "normal" for normal videos


def parse_label(raw: str) -> tuple[int, str]:
    text = raw.strip()
    if text.lower() in NORMAL_NAMES:
        return 0, "normal"
    code = text.split("-")[0]
    if code in XD_VIOLENCE_CODES:
        name = XD_VIOLENCE_CODES[code]
        return (0 if name == "normal" else 1), name
    if text.lower() == "1":
        return 1, "anomaly"
    return 1, text.lower()


def _reroot(path: Path, root: Optional[Path]) -> Path:
    if root is None or path.is_file():
        return path
    for candidate in (root / path.name, root / path.parent.name / path.name):
        if candidate.is_file():
            return candidate
    return root / path.name


def read_feature_list(csv_path: Path, root: Optional[Path] = None) -> list[ListEntry]:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise EdgeVadError(f"{csv_path}: feature list not found; pass a CSV with a `path,label` header")
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"path", "label"} <= set(reader.fieldnames):
            raise EdgeVadError(f"{csv_path}: expected a `path,label` header, found {reader.fieldnames}; fix the CSV")
        entries = []
        for row in reader:
            label, name = parse_label(row["label"])
            entries.append(ListEntry(_reroot(Path(row["path"]), root), label, name))
    if not entries:
        raise EdgeVadError(f"{csv_path}: the list is empty")
    return entries


def load_features(entry: ListEntry) -> np.ndarray:
    if not entry.path.is_file():
        raise EdgeVadError(f"{entry.path}: feature file not found; pass --features-root with the folder that holds it")
    arr = np.load(entry.path).astype(np.float32)
    if arr.ndim != 2:
        raise EdgeVadError(f"{entry.path}: expected features [T, D], got shape {list(arr.shape)}")
    return arr
