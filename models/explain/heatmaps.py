"""Heatmaps of the coarse stage as the device draws them, without gradients (paper Sec. V-E, Figs. 6-7).

Two rules, chosen by the checkpoint's head input (what the exported bundle's manifest records as heatmap_kind):

- "trunk+fa-motion" checkpoints (issue 15's design): the device's "fa-motion" heatmap, by the runtime's own
  functions (edge_vad.runtime.heatmap): F_A's change since the previous frame x grey-level motion of the model
  input. It needs each frame's previous frame and does not depend on the head (teacher and student share it),
  so there is one map, named "fa-motion", and no channel weights: the heads read pooled trunk features and
  window statistics of F_A's change, which do not split over F_A's positions (`channel_weights` says so).
- "feature" / "feature+motion" checkpoints (deconvolution branch, QACM student): class activation. F_A
  [128, 14, 14] is pooled into the frame feature f = mean_{h,w} F_A[:, h, w], so any head linear in f splits its
  logit over the positions: w . f = mean_{h,w} sum_c w_c F_A[c, h, w]. The heatmap is that per-position
  contribution where it raises the anomaly logit: heat[h, w] = relu(sum_c w_c F_A[c, h, w]), one per head.
  The channel weights w [128] are a constant per checkpoint (the bundle carries them), from each head
  linearised with its nonlinear parts set aside:
  - teacher (AFED): logit = head(LN(x + TimeMix...(proj f))). Along the residual path, with the TimeMix
    branches dropped: w = W_head diag(gamma_LN) C W_proj, C = I - 11^T/d the LayerNorm's centring (linear);
    the LayerNorm's 1/sigma is a positive per-frame scale and does not move the map.
  - student (QACM): three causal temporal convs (ReLU) and a 1x1 conv. For a feature held constant over the
    window with every ReLU passing: w = W_out (sum_k W3_k)(sum_k W2_k)(sum_k W1_k).
  On the pre-issue-15 default checkpoint both agreed with the mean input gradient over real frames (cosine
  0.97-0.99); the plain sum of the student's first-layer weights did not (cosine -0.8), so it is not used.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from edge_vad.constants import SNIPPET_FRAMES
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import write_json_atomic
from edge_vad.head_input import FEATURE_MOTION, TRUNK_FA_MOTION, head_inputs
from edge_vad.runtime.coarse import HEATMAP_FA_MOTION
from edge_vad.runtime.heatmap import evidence_heatmap, grey_input, grey_motion, map_change
from edge_vad_models.checkpoint import CoarseCheckpoint, load_coarse
from edge_vad_models.coarse_heads import AFEDTeacher, QACMStudent
from edge_vad_models.explain import save_figure

log = logging.getLogger(__name__)

HEADS = ("teacher", "student")
FA_MOTION = HEATMAP_FA_MOTION  # the map's name: the manifest's heatmap_kind, so explain and device say the same
WEIGHT_RULES = {
    "teacher": "W_head diag(gamma_final_LN) (I - 11^T/d) W_proj (AFED linearised along the residual path)",
    "student": "W_out (sum_k W3_k)(sum_k W2_k)(sum_k W1_k) (QACM with ReLUs passing, feature constant over the window)",
}
FA_MOTION_RULE = ("evidence_heatmap(map_change(F_A(t), F_A(t-1)), grey_motion(grey(t), grey(t-1))) "
                  "(edge_vad.runtime.heatmap, as the device draws it; zero at a stream's first frame)")
BATCH_FRAMES = 16  # frames per trunk / branch call
MIN_GAP_FRAMES = SNIPPET_FRAMES // 2  # top frames at least half a snippet apart: neighbours look alike


# ---- channel weights ---------------------------------------------------------------------------------------------

def teacher_weights(teacher: AFEDTeacher) -> np.ndarray:
    """[in_dim] linearised AFED head (module doc)."""
    with torch.no_grad():
        dim = teacher.proj.out_features
        centring = torch.eye(dim) - torch.full((dim, dim), 1.0 / dim)
        w = teacher.head.weight @ torch.diag(teacher.rwkv.norm.weight) @ centring @ teacher.proj.weight
    return w[0].numpy().astype(np.float32)


def student_weights(student: QACMStudent) -> np.ndarray:
    """[in_dim] linearised QACM student (module doc)."""
    if not isinstance(student, QACMStudent):
        raise EdgeVadError(f"channel weights are defined for the QACM student, this checkpoint's is a "
                           f"{type(student).__name__}; explain the teacher")
    convs = [m for m in student.net if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        w = torch.eye(student.in_dim)
        for conv in convs:  # [out, in, 1, k] -> sum over taps -> [out, in]
            w = conv.weight.sum(dim=(2, 3)) @ w
    return w[0].numpy().astype(np.float32)


def channel_weights(checkpoint: Union[CoarseCheckpoint, str, Path], which: str = "student") -> np.ndarray:
    """Channel weights w [branch_channels] (float32) of `which` head ("teacher" or "student") of a coarse checkpoint
    (a loaded CoarseCheckpoint, a folder, or "default"). The runtime draws heat = relu(sum_c w_c F_A[c]).
    A "trunk+fa-motion" checkpoint has none (module doc): one EdgeVadError says so."""
    if which not in HEADS:
        raise EdgeVadError(f"unknown head {which!r}; choose one of {', '.join(HEADS)}")
    ckpt = checkpoint if isinstance(checkpoint, CoarseCheckpoint) else load_coarse(checkpoint)
    if ckpt.head_input == TRUNK_FA_MOTION:
        # Its heads read the pooled trunk and window statistics of |F_A(t) - F_A(t-1)|: no weight per F_A
        # channel turns that into a map, and the device does not use one.
        raise EdgeVadError(f"head input {TRUNK_FA_MOTION!r} has no heatmap channel weights: this design uses the "
                           f"{FA_MOTION!r} heatmap (F_A change x grey-level motion, edge_vad.runtime.heatmap)")
    if which == "teacher":
        w = teacher_weights(ckpt.teacher)
    elif ckpt.student is None:
        raise EdgeVadError("this coarse checkpoint has no distilled student; run `edge-vad train default` or "
                           "explain the teacher")
    else:
        w = student_weights(ckpt.student)
    # The heads read [F, M] for head_input "feature+motion"; only the F half maps back onto F_A's channels
    # (M is a change over time, with no place in one frame), so the heat uses that half.
    return w[:len(w) // 2] if ckpt.head_input == FEATURE_MOTION else w


# ---- maps --------------------------------------------------------------------------------------------------------

def class_activation(fa: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """F_A [N, C, h, w] (or [C, h, w]) and weights [C] -> heat [N, h, w] (or [h, w]) = relu(sum_c w_c F_A[c])."""
    fa = np.asarray(fa, dtype=np.float32)
    weights = np.asarray(weights, dtype=np.float32)
    if fa.ndim not in (3, 4) or fa.shape[-3] != weights.shape[0]:
        raise EdgeVadError(f"F_A must be [N, {weights.shape[0]}, h, w], got {list(fa.shape)}")
    return np.maximum(np.einsum("...chw,c->...hw", fa, weights), 0.0)


def upsample(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Low-resolution heat [h, w] -> [H, W] = `size` (bilinear, half-pixel centres: as the overlays are drawn)."""
    height, width = size
    return cv2.resize(np.asarray(heat, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass
class VideoHeat:
    """Per-frame results for one video: low-resolution heat per map, scores per head, frame size."""

    heat: dict  # map name ("fa-motion", or "teacher" / "student") -> [T, h, w] float32
    scores: dict  # head -> [T] anomaly probability (causal, as on the device)
    features: np.ndarray  # [T, C] pooled F_A
    frame_size: tuple[int, int]  # (H, W) of the source frames


class CoarseExplainer:
    """The trained coarse stage of a checkpoint, for explanations: trunk (onnxruntime, as the feature extractor
    runs it: PyTorch eager is ~20x slower for Lite0 here), branch F_A, both heads, and the heatmap rule."""

    def __init__(self, checkpoint: Union[CoarseCheckpoint, str, Path] = "default", use_onnx: bool = True):
        self.ckpt = checkpoint if isinstance(checkpoint, CoarseCheckpoint) else load_coarse(checkpoint)
        self.ckpt.require_backbone("explain (heatmaps are drawn from F_A)")
        self.fa_motion = self.ckpt.head_input == TRUNK_FA_MOTION
        self.weights = {} if self.fa_motion else {"teacher": channel_weights(self.ckpt, "teacher")}
        if self.ckpt.student is not None and not self.fa_motion:
            self.weights["student"] = channel_weights(self.ckpt, "student")
        self._runner = None
        self._use_onnx = use_onnx

    @property
    def maps(self) -> list[str]:
        """Names of the heatmaps this checkpoint has: ["fa-motion"], or one per head ("teacher", "student")."""
        return [FA_MOTION] if self.fa_motion else list(self.weights)

    @property
    def deployed_map(self) -> str:
        """The map the device draws for this checkpoint (the student's when there is one)."""
        return FA_MOTION if self.fa_motion else ("student" if "student" in self.weights else "teacher")

    @property
    def rule(self) -> str:
        return FA_MOTION_RULE if self.fa_motion else "relu(sum_c w_c F_A[c]) upsampled bilinearly"

    def grey(self, frame_bgr: np.ndarray) -> np.ndarray:
        pre = self.ckpt.backbone.preprocess
        return grey_input(frame_bgr, pre.size, pre.interpolation)

    def trunk_maps(self, frames_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 BGR frames -> trunk maps [N, C, 7, 7] float32."""
        if self._use_onnx:
            if self._runner is None:
                from edge_vad_models.features import TrunkRunner

                self._runner = TrunkRunner(self.ckpt.backbone)
            return np.asarray(self._runner(list(frames_bgr)), dtype=np.float32)
        x = torch.cat([self.ckpt.backbone.preprocess_bgr(f) for f in frames_bgr])
        with torch.no_grad():
            return self.ckpt.backbone.trunk(x).numpy()

    def fa_from_trunk(self, trunk: np.ndarray) -> np.ndarray:
        """Trunk maps [N, C, 7, 7] -> F_A [N, 128, h, w] through the trained branch."""
        with torch.no_grad():
            return self.ckpt.backbone.branch(torch.from_numpy(np.asarray(trunk, dtype=np.float32))).numpy()

    def heat_from_fa(self, fa: np.ndarray) -> dict:
        """F_A [N, 128, 14, 14] -> {head: heat [N, 14, 14]} (class-activation checkpoints only)."""
        if self.fa_motion:
            raise EdgeVadError(f"the {FA_MOTION!r} heatmap needs each frame's previous frame; use motion_heat")
        return {head: class_activation(fa, w) for head, w in self.weights.items()}

    def motion_heat(self, frames: Sequence[np.ndarray], previous: Sequence[Optional[np.ndarray]]) -> np.ndarray:
        """The device's "fa-motion" heat [N, 28, 28] of frames, each with its previous frame (None: stream start).
        On the device the heat of frame t depends on frames t and t-1 only, so pairs give exactly its map."""
        if len(previous) != len(frames):
            raise EdgeVadError(f"{len(frames)} frames but {len(previous)} previous frames")
        known = [p for p in previous if p is not None]
        fa = self.fa_from_trunk(self.trunk_maps(list(frames) + known))  # one trunk call for both
        prev_fa = iter(fa[len(frames):])
        out = []
        for f, a, p in zip(frames, fa[:len(frames)], previous):
            pa = next(prev_fa) if p is not None else None
            fine = grey_motion(self.grey(f), self.grey(p) if p is not None else None)
            out.append(evidence_heatmap(map_change(a, pa), fine))
        return np.stack(out)

    def frame_heatmaps(self, frames_bgr: Sequence[np.ndarray], name: Optional[str] = None,
                       previous: Optional[Sequence[Optional[np.ndarray]]] = None) -> np.ndarray:
        """Heatmap `name` (default: the deployed map) at each frame's own size [N, H, W] (frames of one size).
        For "fa-motion", `previous` gives each frame's previous frame; without it the frames are one stream
        (the first has no previous frame: zero heat, as at the device's stream start)."""
        name = name or self.deployed_map
        if name not in self.maps:
            raise EdgeVadError(f"this checkpoint has no heatmap {name!r}; it has {', '.join(self.maps)}")
        if self.fa_motion:
            previous = previous if previous is not None else [None, *frames_bgr[:-1]]
            heat = self.motion_heat(frames_bgr, previous)
        else:
            heat = self.heat_from_fa(self.fa_from_trunk(self.trunk_maps(frames_bgr)))[name]
        size = frames_bgr[0].shape[:2]
        return np.stack([upsample(h, size) for h in heat])

    def scores(self, features: np.ndarray, trunk: Optional[np.ndarray] = None,
               maps: Optional[np.ndarray] = None) -> dict:
        """Pooled F_A [T, C] of a whole video (and, for "trunk+fa-motion", its pooled trunk [T, 1280] and F_A maps)
        -> {head: per-frame anomaly probability [T]} (causal)."""
        x = torch.from_numpy(head_inputs(features, self.ckpt.head_input, trunk, maps))[None]
        out = {}
        with torch.no_grad():
            out["teacher"] = torch.sigmoid(self.ckpt.teacher(x))[0].numpy()
            if self.ckpt.student is not None:
                out["student"] = torch.sigmoid(self.ckpt.student(x))[0].numpy()
        return out

    def explain_frames(self, frames: Iterable[np.ndarray]) -> VideoHeat:
        """Heat and scores of every frame of a stream of frames (held in memory only as low-resolution maps)."""
        heats: dict = {m: [] for m in self.maps}
        feats, trunks, fa_maps, size = [], [], [], None
        previous_fa, previous_grey = None, None
        frames = iter(frames)
        while batch := list(itertools.islice(frames, BATCH_FRAMES)):
            size = size or batch[0].shape[:2]
            trunk = self.trunk_maps(batch)
            fa = self.fa_from_trunk(trunk)
            feats.append(fa.mean(axis=(2, 3)))
            if self.fa_motion:  # streamed as the device does: state = the previous frame's F_A and grey input
                for f, a in zip(batch, fa):
                    g = self.grey(f)
                    heats[FA_MOTION].append(evidence_heatmap(map_change(a, previous_fa), grey_motion(g, previous_grey)))
                    previous_fa, previous_grey = a, g
                trunks.append(trunk.mean(axis=(2, 3)))
                fa_maps.append(fa)
            else:
                for head, h in self.heat_from_fa(fa).items():
                    heats[head].extend(h)
        if size is None:
            raise EdgeVadError("no frame could be decoded from the source; check the path")
        features = np.concatenate(feats)
        scores = (self.scores(features, np.concatenate(trunks), np.concatenate(fa_maps)) if self.fa_motion
                  else self.scores(features))
        return VideoHeat({m: np.stack(v) for m, v in heats.items()}, scores, features, tuple(size))


def select_top_frames(scores: np.ndarray, top: int, min_gap: int = MIN_GAP_FRAMES) -> list[int]:
    """Indices of the `top` highest-scoring frames, greedily at least `min_gap` apart (then closer ones if the video
    is too short), in frame order."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    chosen: list[int] = []
    for i in order:
        if len(chosen) == top:
            break
        if all(abs(int(i) - c) >= min_gap for c in chosen):
            chosen.append(int(i))
    for i in order:  # short video: fill up without the gap
        if len(chosen) >= top:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return sorted(chosen)


def _frames_at(frames: Iterable[np.ndarray], wanted: Sequence[int]) -> dict[int, np.ndarray]:
    wanted_set, out = set(wanted), {}
    for i, frame in enumerate(frames):
        if i in wanted_set:
            out[i] = frame
            if len(out) == len(wanted_set):
                break
    return out


# ---- figures -----------------------------------------------------------------------------------------------------

def _rgb(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def contact_sheet(images: Sequence[np.ndarray], titles: Sequence[str], path: Path, columns: int = 4) -> Path:
    """Grid of BGR images with titles, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(images) // columns))
    cols = min(columns, max(1, len(images)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(_rgb(img))
        ax.set_title(title, fontsize=8)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def teacher_student_figure(frames: Sequence[np.ndarray], teacher_heat: Sequence[np.ndarray],
                           student_heat: Sequence[np.ndarray], titles: Sequence[str], path: Path) -> Path:
    """Paper Fig. 7: (a) frames, (b) teacher heatmaps (before distillation), (c) student heatmaps (after), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_vad.runtime.snapshot import overlay

    cols = len(frames)
    fig, axes = plt.subplots(3, cols, figsize=(2.6 * cols, 6.4), squeeze=False)
    rows = [("(a) frames", list(frames)),
            ("(b) teacher (AFED)", [overlay(f, h) for f, h in zip(frames, teacher_heat)]),
            ("(c) student (QACM)", [overlay(f, h) for f, h in zip(frames, student_heat)])]
    for r, (label, images) in enumerate(rows):
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(_rgb(img))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def explain_heatmaps(source: Path, out_dir: Path, checkpoint: Union[str, Path] = "default", top: int = 8,
                     explainer: Optional[CoarseExplainer] = None) -> dict:
    """Heatmaps of one video or image folder: out_dir/overlays/*.jpg (the deployed map over the `top` frames the
    student scores highest), contact_sheet.png, teacher_vs_student.png (Fig. 7; class-activation checkpoints,
    whose heads have a map each) and heatmaps.json (what was chosen and how)."""
    from edge_vad.runtime.snapshot import overlay, write_snapshot
    from edge_vad_models.features import iter_frames

    if top < 1:
        raise EdgeVadError(f"--top must be >= 1, got {top}")
    explainer = explainer or CoarseExplainer(checkpoint)
    video = explainer.explain_frames(iter_frames(Path(source)))
    head = "student" if "student" in video.scores else "teacher"
    shown = explainer.deployed_map
    chosen = select_top_frames(video.scores[head], top)
    frames = _frames_at(iter_frames(Path(source)), chosen)  # second pass: only the chosen frames are kept
    chosen = [i for i in chosen if i in frames]
    out_dir = Path(out_dir)
    overlay_paths, images, titles = [], [], []
    for i in chosen:
        path = write_snapshot(out_dir / "overlays" / f"frame{i:06d}.jpg", frames[i], video.heat[shown][i])
        overlay_paths.append(str(path.relative_to(out_dir)))
        images.append(overlay(frames[i], video.heat[shown][i]))
        titles.append(f"frame {i}  score {video.scores[head][i]:.3f}")
    files = {"overlays": overlay_paths,
             "contact_sheet": str(contact_sheet(images, titles, out_dir / "contact_sheet.png").relative_to(out_dir))}
    # Fig. 7 compares two heads' maps; the fa-motion map is one for both heads, so there is nothing to compare.
    if "student" in video.heat and "teacher" in video.heat:
        fig = teacher_student_figure([frames[i] for i in chosen], [video.heat["teacher"][i] for i in chosen],
                                     [video.heat["student"][i] for i in chosen], titles,
                                     out_dir / "teacher_vs_student.png")
        files["teacher_vs_student"] = str(fig.relative_to(out_dir))
    summary = {
        "source": str(source),
        "n_frames": int(len(video.features)),
        "frame_size": list(video.frame_size),
        "ranked_by": f"{head} anomaly probability (sigmoid of its logit, causal, per frame)",
        "frames": [{"index": i, **{f"{h}_score": float(video.scores[h][i]) for h in video.scores}} for i in chosen],
        "heatmap": shown,
        "heatmap_rule": explainer.rule,
        "overlay": "the heatmap's top region tinted and outlined (edge_vad.runtime.heatmap.draw_top_region)",
        "channel_weight_rules": {h: WEIGHT_RULES[h] for h in explainer.weights},
        "coarse_sha256": explainer.ckpt.sha256,
        "files": files,
    }
    write_json_atomic(out_dir / "heatmaps.json", summary)
    return summary

