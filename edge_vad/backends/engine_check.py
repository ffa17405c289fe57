"""Does a freshly built engine compute what the ONNX graph computes? Checked on reference inputs and outputs
the exporter stored in the bundle (docs/jetson.md, "Reference check"), before the engine is cached.

Metrics, each with a limit per precision (the bundle's manifest records the limits it was exported with):
- cosine_min: the smallest cosine between the engine's and the reference output, per sample, over every
  output with more than one element (features, heatmaps, logits vectors);
- max_rel_diff: max |engine - reference| / max |reference| per output (fp32 and fp16 only: int8 moves single
  values too far for a max to mean anything);
- score_max_abs_diff: for outputs that are anomaly logits, the largest difference of sigmoid(logit);
- score_rank_corr_min: Spearman correlation of those scores over the samples (the ranking the gate sees).
Pure numpy: the exporter and the tests use it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_vad.errors import EdgeVadError

# The limits the exporter writes into new bundles. fp32: TensorRT's kernels against onnxruntime's, TF32 off.
# fp16: 10-bit mantissas through ~50 convolutions. int8: DESIGN.md's int8 TFLite of the same backbone kept a
# cosine of 0.95 (1280-d) at worst on real frames; the limits leave that room and no more.
DEFAULT_TOLERANCES: Dict[str, Dict[str, float]] = {
    "fp32": {"cosine_min": 0.9999, "max_rel_diff": 1e-3, "score_max_abs_diff": 1e-3, "score_rank_corr_min": 0.99},
    "fp16": {"cosine_min": 0.999, "max_rel_diff": 0.05, "score_max_abs_diff": 0.02, "score_rank_corr_min": 0.9},
    "int8": {"cosine_min": 0.95, "score_max_abs_diff": 0.1, "score_rank_corr_min": 0.8},
}
AT_LEAST = ("cosine_min", "score_rank_corr_min")  # the others are upper limits


class EngineMismatch(EdgeVadError):
    """The engine's outputs are outside the bundle's tolerance: it is refused, never cached."""


@dataclass(frozen=True)
class MetricResult:
    output: str
    metric: str
    value: float
    limit: float

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.metric in AT_LEAST else self.value <= self.limit

    def describe(self) -> str:
        op = ">=" if self.metric in AT_LEAST else "<="
        return f"{self.output} {self.metric} {self.value:.4g} (limit {op} {self.limit:g})"


@dataclass(frozen=True)
class EngineReference:
    """Reference samples of one graph: feeds and expected outputs, by the ENGINE's tensor names."""

    name: str  # the graph, for messages (e.g. coarse_backbone.onnx)
    feeds: Sequence[Mapping[str, np.ndarray]]
    expected: Sequence[Mapping[str, np.ndarray]]
    tolerances: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: DEFAULT_TOLERANCES)
    score_outputs: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.feeds) != len(self.expected) or not self.feeds:
            raise EdgeVadError(f"{self.name}: reference data has {len(self.feeds)} inputs for {len(self.expected)} "
                               "outputs; re-export the bundle")

    def measure(self, run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
                precision: str) -> List[MetricResult]:
        """Run every sample through `run` and measure it against the expected outputs."""
        limits = self.tolerances.get(precision)
        if limits is None:
            raise EdgeVadError(f"{self.name}: the bundle has no reference tolerance for precision {precision}; "
                               "re-export the bundle")
        got = [dict(run(feed)) for feed in self.feeds]
        results: List[MetricResult] = []
        for name in self.expected[0]:
            ref = np.stack([np.asarray(e[name], np.float64).ravel() for e in self.expected])
            out = np.stack([np.asarray(g[name], np.float64).ravel() for g in got])
            if name in self.score_outputs:
                results += _score_metrics(name, out, ref, limits)
                continue
            if ref.shape[1] > 1 and "cosine_min" in limits:
                results.append(MetricResult(name, "cosine_min", _cosine_min(out, ref), limits["cosine_min"]))
            if "max_rel_diff" in limits:
                scale = max(float(np.abs(ref).max()), 1e-12)
                results.append(MetricResult(name, "max_rel_diff", float(np.abs(out - ref).max()) / scale,
                                            limits["max_rel_diff"]))
        return results

    def check(self, run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
              precision: str) -> List[MetricResult]:
        """measure(); EngineMismatch (one line) naming the worst failures when any metric is outside its limit."""
        results = self.measure(run, precision)
        failed = [r for r in results if not r.passed]
        if failed:
            raise EngineMismatch(f"tensorrt: the {precision} engine built from {self.name} does not match the bundle's "
                                 f"reference outputs ({'; '.join(r.describe() for r in failed[:3])}); it was not "
                                 "cached; build another precision (--precision fp32) or re-export the bundle")
        return results


def _cosine_min(out: np.ndarray, ref: np.ndarray) -> float:
    num = (out * ref).sum(axis=1)
    den = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(out - ref).max(axis=1) == 0, 1.0, 0.0))
    return float(cos.min())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the overflow-free form


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties share their mean rank
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman's rank correlation; None where it is undefined (fewer than 3 samples, or a constant side)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _score_metrics(name: str, out: np.ndarray, ref: np.ndarray, limits: Mapping[str, float]) -> List[MetricResult]:
    s_out, s_ref = _sigmoid(out[:, 0]), _sigmoid(ref[:, 0])
    results = []
    if "score_max_abs_diff" in limits:
        results.append(MetricResult(name, "score_max_abs_diff", float(np.abs(s_out - s_ref).max()),
                                    limits["score_max_abs_diff"]))
    rho = spearman(s_out, s_ref)
    if rho is not None and "score_rank_corr_min" in limits:
        results.append(MetricResult(name, "score_rank_corr_min", rho, limits["score_rank_corr_min"]))
    return results
