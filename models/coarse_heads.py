"""Coarse-stage heads of TCVADS (paper Sec. IV-A): the AFED teacher and the QACM student.

- AFEDTeacher: frame/snippet features -> Linear -> enhanced RWKV -> Linear -> one anomaly logit per step.
  Trained with MIL on video labels; parallel `forward` for training, `init_state` / `step` for streaming.
- QACMStudent: QACM_LAYERS causal temporal convolutions over the last `window` features, distilled from the
  teacher; the only temporal model that runs on the device. The convolutions are nn.Conv2d with kernel (1, k)
  on a [B, C, 1, T] tensor, because a Conv1d leaves TRANSPOSE ops in the EdgeTPU model (DESIGN.md, trap 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from edge_vad.constants import QACM_LAYERS, RWKV_BLOCKS
from edge_vad.errors import EdgeVadError
from edge_vad_models.rwkv import EnhancedRWKV


class AFEDTeacher(nn.Module):
    """[B, T, in_dim] features -> [B, T] anomaly logits through the enhanced RWKV (causal)."""

    def __init__(self, in_dim: int, dim: int = 256, n_blocks: int = RWKV_BLOCKS, dropout: float = 0.0):
        super().__init__()
        self.in_dim = in_dim
        self.proj = nn.Linear(in_dim, dim)
        self.drop = nn.Dropout(dropout)
        self.rwkv = EnhancedRWKV(dim, n_blocks=n_blocks)
        self.head = nn.Linear(dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Parallel form: [B, T, in_dim] -> logits [B, T]."""
        return self.head(self.rwkv(self.drop(self.proj(x)))).squeeze(-1)

    def init_state(self, batch: int = 1, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> Tensor:
        """Recurrent state before the first frame (layout: edge_vad_models.rwkv.STATE_LAYOUT)."""
        return self.rwkv.init_state(batch, dtype=dtype, device=device)

    def step(self, x_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """Streaming form, one frame: ([B, in_dim], state) -> (logit [B], new state)."""
        y, state = self.rwkv.step(self.drop(self.proj(x_t)), state)
        return self.head(y).squeeze(-1), state


class QACMStudent(nn.Module):
    """Causal temporal CNN: the logit at t depends on features x[t - window + 1 .. t] only.

    Layers: QACM_LAYERS x (Conv2d kernel (1, kernel), dilation d_l, ReLU), then a 1x1 Conv2d to one logit.
    Receptive field `window` = 1 + (kernel - 1) * sum(dilations).
    Stream start: `forward` repeats the first frame to fill the window; the runtime must do the same.
    """

    def __init__(self, in_dim: int, hidden: int = 64, kernel: int = 3,
                 dilations: Sequence[int] = (1, 2, 4)):
        super().__init__()
        if len(dilations) != QACM_LAYERS:
            raise EdgeVadError(f"QACM has {QACM_LAYERS} temporal conv layers (paper), got dilations {tuple(dilations)}")
        if kernel < 1 or hidden < 1 or any(d < 1 for d in dilations):
            raise EdgeVadError(f"QACM needs kernel, hidden and dilations >= 1, got {kernel}, {hidden}, {dilations}")
        self.in_dim = in_dim
        self.window = 1 + (kernel - 1) * sum(dilations)
        layers: list[nn.Module] = []
        channels = in_dim
        for d in dilations:
            # Valid (unpadded) convolutions: causality comes from padding the INPUT on the left once.
            # Dilation (d, d), not (1, d): identical on H = 1, and the EdgeTPU wants equal dilations.
            layers += [nn.Conv2d(channels, hidden, kernel_size=(1, kernel), dilation=(d, d)), nn.ReLU()]
            channels = hidden
        layers.append(nn.Conv2d(hidden, 1, kernel_size=1))
        self.net = nn.Sequential(*layers)

    def _logits(self, x: Tensor) -> Tensor:
        """[B, T, in_dim] with T >= window -> [B, T - window + 1]."""
        y = self.net(x.transpose(1, 2).unsqueeze(2))  # [B, in_dim, 1, T] (NCHW, H = 1)
        return y[:, 0, 0]

    def forward(self, x: Tensor) -> Tensor:
        """[B, T, in_dim] -> logits [B, T]; causal, the first frame repeated to fill the window at t < window."""
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise EdgeVadError(f"QACMStudent expects [batch, time, {self.in_dim}], got {list(x.shape)}")
        pad = x[:, :1].expand(-1, self.window - 1, -1)
        return self._logits(torch.cat([pad, x], dim=1))

    def forward_window(self, x: Tensor) -> Tensor:
        """On-device form: the last `window` features [B, window, in_dim] -> the last frame's logit [B]."""
        if x.dim() != 3 or x.shape[1] != self.window or x.shape[-1] != self.in_dim:
            raise EdgeVadError(
                f"QACMStudent.forward_window expects [batch, {self.window}, {self.in_dim}], got {list(x.shape)}")
        return self._logits(x)[:, 0]


class WindowStatsHead(nn.Module):
    """The streaming coarse head of issue 15: fixed window statistics of the last `window` frame vectors, then a
    standardised linear readout to one logit (a regularised logistic regression, fitted by
    edge_vad_models.training.window_design; numpy twin: edge_vad_models.training.window_stats).

    Per channel c of the [B, window, in_dim] input: mean, mean and max of |x_(i+1) - x_i|, mean |x_i - mean|.
    Written with ops the int8 TFLite / Edge TPU path keeps integer (DESIGN.md toolchain traps): the frame
    differences are depthwise (1, 2) convolutions with fixed weights (+1, -1) and (-1, +1), |d| = relu(d) +
    relu(-d), means and maxima over the time axis of an NCHW [B, C, 1, W] tensor through average / max
    pooling, and one 1x1 convolution per statistic (not a concatenation: each statistic keeps its own int8
    range) whose outputs are summed. Causal by construction; stream start repeats the first frame (runtime).
    """

    STATS = ("mean", "dmean", "dmax", "dev")

    def __init__(self, in_dim: int, window: int):
        super().__init__()
        if window < 2:
            raise EdgeVadError(f"a window-statistics head needs window >= 2, got {window}")
        self.in_dim, self.window = in_dim, window
        forward_diff = torch.tensor([-1.0, 1.0]).reshape(1, 1, 1, 2).repeat(in_dim, 1, 1, 1)
        self.register_buffer("rise", forward_diff.clone())  # x_(i+1) - x_i, per channel (depthwise)
        self.register_buffer("fall", -forward_diff)  # x_i - x_(i+1)
        # standardisation (mean / scale per statistic and channel) and the linear readout, set by `load_fitted`
        self.register_buffer("center", torch.zeros(len(self.STATS), in_dim))
        self.register_buffer("scale", torch.ones(len(self.STATS), in_dim))
        self.readout = nn.ModuleList(nn.Conv2d(in_dim, 1, kernel_size=1, bias=(i == 0)) for i in range(len(self.STATS)))

    def load_fitted(self, center: Tensor, scale: Tensor, coef: Tensor, intercept: float) -> "WindowStatsHead":
        """Standardiser (center, scale: [4, D] or [4 * D]) and logistic-regression weights (coef [4 * D]),
        statistics-major (all channels' means first, as edge_vad_models.training.window_stats orders them)."""
        shape = (len(self.STATS), self.in_dim)
        center, scale = center.reshape(shape), scale.reshape(shape)
        with torch.no_grad():
            self.center.copy_(center)
            self.scale.copy_(scale)
            w = coef.reshape(len(self.STATS), self.in_dim)
            for i, conv in enumerate(self.readout):
                conv.weight.copy_((w[i] / scale[i]).reshape(1, -1, 1, 1))
            self.readout[0].bias.fill_(float(intercept) - float(((w / scale) * center).sum()))
        return self

    def stats(self, t: Tensor) -> list[Tensor]:
        """[B, D, 1, W] (NCHW, time along W) -> four [B, D, 1, 1] statistics."""
        w = self.window
        mean = nn.functional.avg_pool2d(t, (1, w))
        rise = nn.functional.conv2d(t, self.rise, groups=self.in_dim)  # [B, D, 1, W - 1]
        fall = nn.functional.conv2d(t, self.fall, groups=self.in_dim)
        absdiff = torch.relu(rise) + torch.relu(fall)
        dmean = nn.functional.avg_pool2d(absdiff, (1, w - 1))
        dmax = nn.functional.max_pool2d(absdiff, (1, w - 1))
        dev = nn.functional.avg_pool2d(torch.relu(t - mean) + torch.relu(mean - t), (1, w))
        return [mean, dmean, dmax, dev]

    def logit_nchw(self, t: Tensor) -> Tensor:
        """[B, D, 1, W] -> logits [B] (the form the int8 path converts: NHWC [B, 1, W, D] on the device)."""
        return sum(conv(s) for conv, s in zip(self.readout, self.stats(t))).reshape(-1)

    def forward_window(self, x: Tensor) -> Tensor:
        """The last `window` frame vectors [B, window, in_dim] -> the last frame's logit [B]."""
        if x.dim() != 3 or x.shape[1] != self.window or x.shape[-1] != self.in_dim:
            raise EdgeVadError(
                f"WindowStatsHead.forward_window expects [batch, {self.window}, {self.in_dim}], got {list(x.shape)}")
        return self.logit_nchw(x.transpose(1, 2).unsqueeze(2))

    def forward(self, x: Tensor) -> Tensor:
        """[B, T, in_dim] -> logits [B, T]; causal, the first frame repeated to fill the window at t < window."""
        pad = x[:, :1].expand(-1, self.window - 1, -1)
        seq = torch.cat([pad, x], dim=1)
        wins = seq.unfold(1, self.window, 1).transpose(2, 3)  # [B, T, W, D]
        b, t = wins.shape[:2]
        return self.forward_window(wins.reshape(b * t, self.window, self.in_dim)).reshape(b, t)
