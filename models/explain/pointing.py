"""Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016) for the coarse
heatmaps against pixel masks of the anomalous objects (UCSD Ped2 test videos 01-05, 07, 08).

Per frame whose mask is not empty: upsample the checkpoint's heatmap (models/explain/heatmaps.py: the device's
"fa-motion" map for "trunk+fa-motion" checkpoints, one class-activation map per head for older ones) to the mask's size,
take its peak (argmax; the first in row-major order on ties) and count a hit when the peak lies on the mask
(dilated by `tolerance` pixels; 0 = exactly on it). A heatmap with no positive value (relu left nothing) has
no peak and counts as a miss. Chance: a uniformly random point hits with probability = the mask's area share,
so the chance hit rate is the mean area share over the same frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from edge_vad.datasets import image_files
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import write_json_atomic
from edge_vad_models.explain.heatmaps import BATCH_FRAMES, CoarseExplainer, upsample

log = logging.getLogger(__name__)

METHOD = ("pointing game: per frame with a non-empty mask, the argmax of the heatmap (the checkpoint's device rule: "
          "F_A change x grey-level motion from the frame and its previous frame, or relu(sum_c w_c F_A[c]) for older "
          "ones; bilinearly upsampled to the mask) is a hit when it lies on the mask dilated by tolerance_px; a "
          "heatmap with no positive value is a miss; chance = mean mask area share (a uniformly random point)")


def load_masks(npz: Path, key: str) -> np.ndarray:
    """Pixel masks [frames, H, W] bool from a packed-bits npz (UCSD Ped2 format: uint8 [frames, H, W/8])."""
    npz = Path(npz)
    if not npz.is_file():
        raise EdgeVadError(f"mask file not found: {npz}; pass ../shared/data/ucsd-ped2/test_pixel_masks.npz")
    with np.load(npz) as data:
        if key not in data.files:
            raise EdgeVadError(f"{npz} has no masks for video {key!r} (it has {', '.join(sorted(data.files))}); "
                               "name the frames folder after its mask key, e.g. .../frames/01")
        packed = data[key]
    if packed.ndim != 3 or packed.dtype != np.uint8:
        raise EdgeVadError(f"{npz}[{key!r}]: expected packed uint8 [frames, H, W/8], got {packed.dtype} "
                           f"{list(packed.shape)}")
    return np.unpackbits(packed, axis=-1).astype(bool)


def is_hit(heat: np.ndarray, mask: np.ndarray) -> bool:
    """Peak of `heat` (same shape as `mask`) on the mask; a heatmap with no positive value is a miss."""
    if heat.shape != mask.shape:
        raise EdgeVadError(f"heatmap {list(heat.shape)} and mask {list(mask.shape)} differ in shape")
    if not np.isfinite(heat).all() or heat.max() <= 0:
        return False
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(mask[row, col])


def dilate(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """Mask grown by `tolerance` pixels (a disc), the pointing game's usual slack."""
    if tolerance <= 0:
        return mask
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    return cv2.dilate(mask.astype(np.uint8), disc).astype(bool)


@dataclass
class PointingTally:
    """Hits per heatmap over frames with a mask, and the chance baseline over the same frames."""

    hits: dict = field(default_factory=dict)  # map name -> hits
    flat: dict = field(default_factory=dict)  # map name -> heatmaps with no positive value
    area_share_sum: float = 0.0
    n_frames: int = 0

    def add(self, heats: dict, mask: np.ndarray, tolerance: int = 0) -> None:
        """heats: map name -> heat at the mask's size [H, W]; mask [H, W] bool, not empty."""
        target = dilate(mask, tolerance)
        for head, heat in heats.items():
            self.hits[head] = self.hits.get(head, 0) + int(is_hit(heat, target))
            self.flat[head] = self.flat.get(head, 0) + int(not (heat.max() > 0))
        self.area_share_sum += float(target.mean())
        self.n_frames += 1

    def merge(self, other: "PointingTally") -> None:
        for head in other.hits:
            self.hits[head] = self.hits.get(head, 0) + other.hits[head]
            self.flat[head] = self.flat.get(head, 0) + other.flat[head]
        self.area_share_sum += other.area_share_sum
        self.n_frames += other.n_frames

    def rate(self, head: str) -> Optional[float]:
        return self.hits[head] / self.n_frames if self.n_frames else None

    @property
    def chance(self) -> Optional[float]:
        return self.area_share_sum / self.n_frames if self.n_frames else None

    def as_dict(self) -> dict:
        out = {head: {"hit_rate": self.rate(head), "hits": self.hits[head], "no_positive_heat": self.flat[head]}
               for head in self.hits}
        out["chance"] = {"hit_rate": self.chance}
        out["n_frames"] = self.n_frames
        return out


def pointing_video(explainer: CoarseExplainer, frames_dir: Path, masks: np.ndarray, tolerance: int = 0,
                   stride: int = 1) -> PointingTally:
    """Pointing game over one folder of frames (file i <-> mask i); every `stride`-th masked frame."""
    files = image_files(Path(frames_dir))
    if len(files) != len(masks):
        raise EdgeVadError(f"{frames_dir} has {len(files)} frames but the masks cover {len(masks)}; "
                           "pass the frames folder the masks belong to")
    masked = [i for i in range(len(masks)) if masks[i].any()][::max(1, stride)]
    tally = PointingTally()
    for start in range(0, len(masked), BATCH_FRAMES):
        idx = masked[start:start + BATCH_FRAMES]
        frames = [_read(files[i]) for i in idx]
        if explainer.fa_motion:  # the device's map of frame i needs frame i - 1 (none before the first file)
            heats = {explainer.deployed_map: explainer.motion_heat(frames, [_read(files[i - 1]) if i else None
                                                                            for i in idx])}
        else:
            heats = explainer.heat_from_fa(explainer.fa_from_trunk(explainer.trunk_maps(frames)))
        for j, i in enumerate(idx):
            size = masks[i].shape
            tally.add({head: upsample(h[j], size) for head, h in heats.items()}, masks[i], tolerance)
    return tally


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise EdgeVadError(f"cannot read image {path}; check the file")
    return image


def pointing_game(frames_dirs: Sequence[Path], masks_npz: Path, checkpoint: Union[str, Path] = "default",
                  tolerance: int = 0, stride: int = 1, explainer: Optional[CoarseExplainer] = None) -> dict:
    """Pointing game over one or more frames folders; each folder's name is its key in `masks_npz`.
    Returns the report (see `write_pointing`): one entry per heatmap, and top-level `hit_rate` is the deployed
    map's (`heatmap`: "fa-motion", or the student's class-activation map, the teacher's without a student)."""
    if tolerance < 0 or stride < 1:
        raise EdgeVadError(f"need tolerance >= 0 and stride >= 1, got {tolerance}, {stride}")
    # Every folder and its masks are checked before any model runs: a bad last argument fails in a second.
    masks = {}
    for folder in map(Path, frames_dirs):
        if not folder.is_dir():
            raise EdgeVadError(f"frames folder not found: {folder}; pass e.g. ../shared/data/ucsd-ped2/testing/frames/01")
        masks[folder] = load_masks(masks_npz, folder.name)
    explainer = explainer or CoarseExplainer(checkpoint)
    total, per_video = PointingTally(), {}
    for folder, video_masks in masks.items():
        tally = pointing_video(explainer, folder, video_masks, tolerance, stride)
        per_video[folder.name] = tally.as_dict()
        total.merge(tally)
        log.info("pointing %s: %d frames, %s", folder.name, tally.n_frames,
                 ", ".join(f"{h} {tally.rate(h)}" for h in tally.hits))
    if total.n_frames == 0:
        raise EdgeVadError("no frame with a non-empty mask in the given folders; nothing to score")
    shown = explainer.deployed_map
    report = {"hit_rate": total.rate(shown), "heatmap": shown, "maps": list(total.hits), **total.as_dict(), "per_video": per_video,
              "tolerance_px": tolerance, "frame_stride": stride, "method": METHOD,
              "coarse_sha256": explainer.ckpt.sha256}
    return report


def write_pointing(report: dict, json_out: Path) -> Path:
    return write_json_atomic(Path(json_out), report)
