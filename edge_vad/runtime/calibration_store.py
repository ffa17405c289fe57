"""A camera's calibration folder (`edge-vad calibrate --out CAMERA_DIR`): what is in it, how it is written, read and
checked against the bundle it was made with.

    CAMERA_DIR/scene_model.npz     the fitted SceneModel's arrays (edge_vad.runtime.scene_calibration)
    CAMERA_DIR/calibration.json    the small manifest: format, the bundle it belongs to, what was watched, the
                                   fitted gate thresholds and how they were chosen, the npz's sha256

Writing: the npz first, then the manifest, each through edge_vad.fileio's atomic writers; the manifest names
the npz by sha256, so a reader never pairs a manifest with another run's arrays (a crash between the two
renames leaves the old manifest, whose hash then refuses the new npz: run calibrate again).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_vad import __version__
from edge_vad.bundle.manifest import Manifest
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import atomic_write_bytes, sha256_file, write_json_atomic
from edge_vad.runtime.scene_calibration import SceneModel

log = logging.getLogger("edge_vad.calibration")

FORMAT = "edge-vad-scene/1"
MANIFEST_FILE = "calibration.json"
ARRAYS_FILE = "scene_model.npz"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FittedGate(_Strict):
    on_threshold: float = Field(gt=0, lt=1)
    off_threshold: float = Field(gt=0, lt=1)
    events: int
    hours: float
    allowed_events: int
    target_per_hour: float
    rule: str


class CalibrationManifest(_Strict):
    format: str
    created_at: str
    edge_vad: str
    bundle_checkpoint_sha256: Optional[str]  # source_checkpoints["coarse.pt"] of the bundle it was made with
    backend: str
    sources: list
    frames: int
    seconds: float
    grid: int
    appearance_dims: int
    gate: FittedGate
    blend: str
    footage_scores: Dict[str, float]  # quantiles of the calibrated score on the footage (cross-fitted)
    scene_model: Dict[str, Any]  # {"file": ..., "sha256": ...}


def bundle_identity(manifest: Manifest) -> Optional[str]:
    return (manifest.source_checkpoints or {}).get("coarse.pt")


@dataclass(frozen=True)
class Calibration:
    folder: Path
    manifest: CalibrationManifest
    model: SceneModel

    @property
    def name(self) -> str:
        return self.folder.name


def write_calibration(folder: Path, model: SceneModel, fields: Dict[str, Any]) -> Path:
    """Write the npz and the manifest (module doc); returns the manifest's path."""
    folder = Path(folder)
    buf = io.BytesIO()
    np.savez(buf, **model.to_arrays())
    arrays = atomic_write_bytes(folder / ARRAYS_FILE, buf.getvalue())
    record = {"format": FORMAT, "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
              "edge_vad": __version__, **fields,
              "scene_model": {"file": ARRAYS_FILE, "sha256": sha256_file(arrays)}}
    CalibrationManifest.model_validate(record)  # never write a manifest the reader would refuse
    return write_json_atomic(folder / MANIFEST_FILE, record, sort_keys=True)


def load_calibration(folder: Path, bundle: Optional[Manifest] = None) -> Calibration:
    """Read and check a calibration folder; with `bundle`, refuse one made for another model."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise EdgeVadError(f"{folder}: no {MANIFEST_FILE}; make it with `edge-vad calibrate --source ... --out {folder}`")
    try:
        manifest = CalibrationManifest.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise EdgeVadError(f"{path}: not a valid calibration manifest ({first}); run `edge-vad calibrate` again") from None
    if manifest.format != FORMAT:
        raise EdgeVadError(f"{path}: format {manifest.format!r}, this edge-vad reads {FORMAT!r}; run calibrate again")
    arrays = folder / manifest.scene_model.get("file", ARRAYS_FILE)
    if not arrays.is_file() or sha256_file(arrays) != manifest.scene_model.get("sha256"):
        raise EdgeVadError(f"{arrays}: missing or not the file {MANIFEST_FILE} was written with (sha256 differs); "
                           "run `edge-vad calibrate` again")
    if bundle is not None:
        made_for, now = manifest.bundle_checkpoint_sha256, bundle_identity(bundle)
        if made_for and now and made_for != now:
            raise EdgeVadError(f"{folder} was calibrated with another model (checkpoint {made_for[:12]}, the bundle "
                               f"has {now[:12]}); run `edge-vad calibrate` again with this bundle")
    with np.load(arrays, allow_pickle=False) as data:
        model = SceneModel.from_arrays({k: data[k] for k in data.files})
    return Calibration(folder, manifest, model)
