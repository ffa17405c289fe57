"""Ground truth of the video-anomaly benchmarks: parse the field's annotation files into
per-video frame masks, anomalous intervals and class labels.

Formats (detected from the content, not the file name):

- ``ucf_temporal``   UCF-Crime ``Temporal_Anomaly_Annotation.txt``: ``name class s1 e1 s2 e2``,
  ``-1`` where a second (or any) interval is absent. No video length.
- ``ucf_annotation`` ``UCF_Annotation.txt``: ``Class/name.mp4 total_frames class s1 e1 [s2 e2 ...]``.
- ``xd_annotations`` XD-Violence ``annotations.txt`` / ``XD_Annotation.txt``: ``name s1 e1 [s2 e2 ...]``,
  anomalous videos only. No video length.
- ``xd_multiclass``  XD-Violence ``annotations_multiclasses.txt``: ``name cls s e [cls s e ...]``
  (class codes ``B1`` ... ``G``, mapped to names by ``XD_VIOLENCE_CODES``). No video length.
- ``npz_masks``      ``.npz``: video name -> one label per frame (values >= 0.5 are anomalous).

Interval convention: ``s e`` is the half-open frame range ``[s, e)``, so ``mask[s:e] = 1``,
clipped to the video length. This reproduces the reference masks exactly (UCF-Crime
``ucf_test_frame_gt.npz`` on 290/290 videos, XD ``xd_test_frame_gt_pel4vad.npz`` on 800/800).

Mask length rule: ``ucf_annotation`` and ``npz_masks`` carry the length and ignore ``lengths``.
The other formats give none, so ``load_ground_truth`` needs ``lengths`` (video name -> frames,
in practice the length of the expanded scores, or of a reference npz): each listed video gets
a mask of that length; a listed video with no entry in ``lengths`` keeps its intervals but has
no mask (callers report it as "in GT, not in scores"). XD annotation files list anomalous videos
only: a video in ``lengths`` whose XD name says ``label_A`` (normal) gets an all-zero mask.
Normal videos (no intervals) are all-zero masks in every format.

Names are matched with :func:`canonical_name`, which tolerates the field's naming differences.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_vad.constants import XD_VIOLENCE_CODES
from edge_vad.errors import EdgeVadError

Interval = Tuple[int, int]

# Extensions seen in the field's lists (videos, and per-video feature files in VadCLIP's CSVs).
_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".npy")
_CROP_SUFFIX = re.compile(r"__\d+$")  # VadCLIP/XD feature names: `<video>__0` .. `__9` (crop / augmentation index)
_XD_LABEL = re.compile(r"_label_([A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)$")
_UCF_NAME = re.compile(r"^([A-Za-z]+?)(?:_Videos_)?_?\d+_x264$")
NORMAL = "normal"


def _stem(name: str) -> str:
    """Basename without a known extension or a `__N` crop suffix, case kept."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for ext in _EXTENSIONS:
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    return _CROP_SUFFIX.sub("", base)


def canonical_name(name: str) -> str:
    """The key two spellings of one video share: basename, no extension, no `__N` crop suffix, casefolded.

    `Abuse/Abuse028_x264.mp4`, `Abuse028_x264`, `Abuse028_x264__5.npy` -> `abuse028_x264`.
    """
    return _stem(name).casefold()


def class_key(name: str) -> str:
    """Class name in comparable form: XD codes -> names, lower case, letters and digits only."""
    name = XD_VIOLENCE_CODES.get(name, name)
    return re.sub(r"[^a-z0-9]", "", name.lower())


def is_normal_class(name: str) -> bool:
    return class_key(name) == NORMAL


def classes_from_name(name: str) -> Tuple[str, ...]:
    """Video-level classes that the dataset's naming encodes; () when the name says nothing.

    XD-Violence: `..._label_B2-G-0` -> ('shooting', 'explosion') ('0' pads, 'A' is normal).
    UCF-Crime: `Abuse028_x264` -> ('Abuse',), `Normal_Videos_872_x264` -> ('Normal',).
    """
    base = _stem(name)
    match = _XD_LABEL.search(base)
    if match:
        codes = [c for c in match.group(1).split("-") if c != "0"]
        if codes and all(c in XD_VIOLENCE_CODES for c in codes):
            return tuple(dict.fromkeys(XD_VIOLENCE_CODES[c] for c in codes))
        return ()
    match = _UCF_NAME.match(base)
    return (match.group(1),) if match else ()


@dataclass(frozen=True)
class GroundTruth:
    """Parsed ground truth. Keys are video names as the file writes them (minus `.mp4`/folders).

    masks:           video -> uint8 [frames], 1 = anomalous; only videos whose length is known.
    intervals:       video -> half-open anomalous frame intervals [s, e) as written (unclipped).
    segment_classes: video -> class of each interval (None where the format does not say).
    classes:         video -> video-level labels, e.g. ('Abuse',), ('shooting', 'explosion'),
                     ('normal',); () where the format has none.
    """

    format: str
    source: Path
    masks: Mapping[str, np.ndarray]
    intervals: Mapping[str, Tuple[Interval, ...]]
    segment_classes: Mapping[str, Tuple[Optional[str], ...]]
    classes: Mapping[str, Tuple[str, ...]]

    @property
    def videos(self) -> List[str]:
        """Every video the file names (some may lack a mask when their length is unknown)."""
        return list(self.intervals)

    def segments(self, video: str, length: Optional[int] = None) -> List[Tuple[int, int, Optional[str]]]:
        """(start, end, class) of each interval, clipped to `length` (default: the mask's), empties dropped."""
        if length is None:
            length = len(self.masks[video]) if video in self.masks else None
        out = []
        for (s, e), cls in zip(self.intervals[video], self.segment_classes[video]):
            s, e = max(0, s), e if length is None else min(e, length)
            if e > s:
                out.append((s, e, cls))
        return out


def _is_int(token: str) -> bool:
    return re.fullmatch(r"-?\d+", token) is not None


def _pairs(values: Sequence[int]) -> List[Interval]:
    """Pairs (s, e) from a flat list, skipping the `-1 -1` placeholders of absent intervals."""
    return [(s, e) for s, e in zip(values[0::2], values[1::2]) if s >= 0 and e >= 0]


def _strip_video(name: str) -> str:
    """File-listed name -> the bare video name used as key (no folder, no extension)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for ext in _EXTENSIONS:
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


# One parser per text format: returns (name, length or None, intervals, segment classes, video classes),
# or None when the line does not fit the format.
Record = Tuple[str, Optional[int], List[Interval], List[Optional[str]], Tuple[str, ...]]


def _line_ucf_temporal(f: List[str]) -> Optional[Record]:
    if len(f) != 6 or _is_int(f[1]) or not all(_is_int(t) for t in f[2:]):
        return None
    ivs = _pairs([int(t) for t in f[2:]])
    return _strip_video(f[0]), None, ivs, [f[1]] * len(ivs), (f[1],)


def _line_ucf_annotation(f: List[str]) -> Optional[Record]:
    if len(f) < 5 or len(f) % 2 == 0 or not _is_int(f[1]) or _is_int(f[2]) or not all(_is_int(t) for t in f[3:]):
        return None
    ivs = _pairs([int(t) for t in f[3:]])
    return _strip_video(f[0]), int(f[1]), ivs, [f[2]] * len(ivs), (f[2],)


def _line_xd_annotations(f: List[str]) -> Optional[Record]:
    if len(f) < 3 or len(f) % 2 == 0 or not all(_is_int(t) for t in f[1:]):
        return None
    name = _strip_video(f[0])
    ivs = _pairs([int(t) for t in f[1:]])
    labels = tuple(c for c in classes_from_name(name) if c != NORMAL)
    seg_cls: Optional[str] = labels[0] if len(labels) == 1 else None  # intervals carry no class; the name may
    return name, None, ivs, [seg_cls] * len(ivs), labels


def _line_xd_multiclass(f: List[str]) -> Optional[Record]:
    if len(f) < 4 or (len(f) - 1) % 3 != 0:
        return None
    triples = [f[i : i + 3] for i in range(1, len(f), 3)]
    if not all(not _is_int(c) and _is_int(s) and _is_int(e) for c, s, e in triples):
        return None
    ivs, seg_cls = [], []
    for c, s, e in triples:
        if int(s) >= 0 and int(e) >= 0:
            ivs.append((int(s), int(e)))
            seg_cls.append(XD_VIOLENCE_CODES.get(c, c))
    return _strip_video(f[0]), None, ivs, seg_cls, tuple(dict.fromkeys(seg_cls))


_TEXT_FORMATS: Dict[str, Callable[[List[str]], Optional[Record]]] = {
    "ucf_temporal": _line_ucf_temporal,
    "ucf_annotation": _line_ucf_annotation,
    "xd_annotations": _line_xd_annotations,
    "xd_multiclass": _line_xd_multiclass,
}
_HAS_LENGTH = {"ucf_annotation", "npz_masks"}


def detect_format(path: Path) -> str:
    """Name of the ground-truth format of `path`; EdgeVadError if no known format fits every line."""
    if path.suffix.lower() == ".npz":
        return "npz_masks"
    lines = _read_lines(path)
    fitting = [fmt for fmt, parse in _TEXT_FORMATS.items() if all(parse(line.split()) is not None for line in lines)]
    if len(fitting) != 1:
        raise EdgeVadError(
            f"{path}: unrecognised ground-truth format (first line: {lines[0][:80]!r}); use UCF-Crime "
            "Temporal_Anomaly_Annotation.txt / UCF_Annotation.txt, XD-Violence annotations.txt / "
            "annotations_multiclasses.txt, or an .npz of per-video frame masks"
        )
    return fitting[0]


def _read_lines(path: Path) -> List[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EdgeVadError(f"{path}: not a text annotation file (not UTF-8); pass an annotation .txt or a masks .npz") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise EdgeVadError(f"{path}: the ground-truth file is empty; pass a non-empty annotation file")
    return lines


def _mask(length: int, intervals: Sequence[Interval]) -> np.ndarray:
    mask = np.zeros(length, dtype=np.uint8)
    for s, e in intervals:
        mask[max(0, s) : min(e, length)] = 1
    return mask


def mask_intervals(mask: np.ndarray) -> List[Interval]:
    """Half-open runs of ones in a 0/1 mask."""
    padded = np.concatenate([[0], (np.asarray(mask) > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(int(s), int(e)) for s, e in zip(edges[0::2], edges[1::2])]


def _load_npz_masks(path: Path) -> GroundTruth:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a bad file
        raise EdgeVadError(f"{path}: cannot read as .npz ({exc}); pass an .npz of per-video frame masks") from None
    masks, intervals, seg_cls, classes = {}, {}, {}, {}
    with data:
        for key in data.files:
            arr = np.asarray(data[key])
            if arr.ndim != 1 or arr.dtype.kind not in "biuf" or arr.size == 0:
                raise EdgeVadError(
                    f"{path}: entry {key!r} has shape {arr.shape} and dtype {arr.dtype}; a masks .npz needs one "
                    "non-empty 1-D numeric array (a 0/1 label per frame) per video"
                )
            name = _strip_video(key)
            masks[name] = (arr >= 0.5).astype(np.uint8)
            intervals[name] = tuple(mask_intervals(masks[name]))
            labels = classes_from_name(name)
            anomaly_labels = [c for c in labels if not is_normal_class(c)]
            one = anomaly_labels[0] if len(anomaly_labels) == 1 else None
            seg_cls[name] = (one,) * len(intervals[name])
            classes[name] = labels
    return GroundTruth("npz_masks", path, masks, intervals, seg_cls, classes)


def load_ground_truth(path: Path, lengths: Optional[Mapping[str, int]] = None) -> GroundTruth:
    """Parse a ground-truth file (format auto-detected); see the module docstring for the length rule."""
    path = Path(path)
    if not path.is_file():
        raise EdgeVadError(f"ground-truth file not found: {path}; pass an existing annotation .txt or masks .npz")
    fmt = detect_format(path)
    if fmt == "npz_masks":
        return _load_npz_masks(path)
    if fmt not in _HAS_LENGTH and lengths is None:
        raise EdgeVadError(f"{path}: format {fmt} gives no video lengths; pass lengths (e.g. from the scores)")
    by_key = {canonical_name(k): int(v) for k, v in (lengths or {}).items()}
    parse = _TEXT_FORMATS[fmt]
    masks, intervals, seg_cls, classes = {}, {}, {}, {}
    for line in _read_lines(path):
        name, length, ivs, cls, labels = parse(line.split())  # type: ignore[misc]
        if name in intervals:
            raise EdgeVadError(f"{path}: video {name!r} is listed twice; keep one line per video")
        if length is None:
            length = by_key.get(canonical_name(name))
        intervals[name], seg_cls[name] = tuple(ivs), tuple(cls)
        classes[name] = labels if labels else ((NORMAL,) if not ivs else ())
        if length is not None:
            masks[name] = _mask(length, ivs)
    if fmt.startswith("xd_"):
        # XD lists anomalous videos only; its normal videos are the `label_A` names among `lengths`.
        listed = {canonical_name(n) for n in intervals}
        for key, length in (lengths or {}).items():
            name = _stem(key)
            if canonical_name(name) not in listed and classes_from_name(name) == (NORMAL,):
                masks[name], intervals[name], seg_cls[name], classes[name] = _mask(int(length), []), (), (), (NORMAL,)
    return GroundTruth(fmt, path, masks, intervals, seg_cls, classes)
