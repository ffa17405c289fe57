"""The window-statistics coarse head: the numpy statistics, the fitted logistic regression and the exportable
torch module give the same logits; it is causal; Platt scaling folds into it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from edge_vad.datasets import Clip  # noqa: E402
from edge_vad_models.coarse_heads import WindowStatsHead  # noqa: E402
from edge_vad_models.training.cv_eval import Video  # noqa: E402
from edge_vad_models.training.window_design import WindowDesign, fit_window_head, platt_scaling  # noqa: E402
from edge_vad_models.training.window_stats import STATS, padded_windows, stream_stats, window_stats  # noqa: E402

D, W = 6, 8


def videos(n: int = 24):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        label = i % 2
        x = rng.normal(0, 1, (30, D)).astype(np.float32)
        x[:, 0] += 1.5 * label * rng.random(30)  # anomalies jitter channel 0
        out.append(Video(Clip(f"v{i}", Path("v"), label, f"g{i}"), {"x": x}))
    return out


def test_statistics_by_hand():
    w = np.array([[[0.0], [2.0], [1.0], [5.0]]], np.float32)  # one window, one channel
    mean, dmean, dmax, dev = window_stats(w, STATS)[0]
    assert (mean, dmean, dmax) == (2.0, pytest.approx(7 / 3), 4.0)
    assert dev == pytest.approx((2 + 0 + 1 + 3) / 4)
    views = padded_windows(np.arange(3, dtype=np.float32)[:, None], 3)
    np.testing.assert_array_equal(views[0, :, 0], [0, 0, 0])  # stream start: the first frame repeated
    np.testing.assert_array_equal(views[2, :, 0], [0, 1, 2])


def test_torch_head_equals_the_fitted_regression_and_is_causal():
    design = WindowDesign(inputs=(("x", STATS),), window=W, C=0.1, train_stride=2)
    fitted = fit_window_head(design, videos())
    fitted.platt = platt_scaling(np.concatenate([fitted.logits(v) for v in videos()]),
                                 np.concatenate([v.labels for v in videos()]))
    center, scale, coef, intercept = fitted.export_weights()
    head = WindowStatsHead(D, W).load_fitted(*(torch.as_tensor(np.asarray(a, np.float32)) for a in (center, scale, coef)),
                                             intercept)
    v = videos()[3]
    with torch.no_grad():
        z = head(torch.from_numpy(v.parts["x"])[None])[0].numpy()
    np.testing.assert_allclose(z, fitted.logits(v), atol=2e-4)
    x = v.parts["x"].copy()
    x[20:] += 5.0  # the future changes: logits up to frame 19 do not
    with torch.no_grad():
        z2 = head(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(z2[:20], z[:20], atol=1e-5)
    assert np.abs(z2[20:] - z[20:]).max() > 0.01
    assert stream_stats(x, W).shape == (30, 4 * D)
