"""1-D Bayesian optimisation: Gaussian-process regression (squared-exponential kernel) + Expected Improvement.

The paper (Sec. IV-A (2), Exp. 12-13, Fig. 5) chooses the distillation temperature T this way. The GP is
scikit-learn's GaussianProcessRegressor with ConstantKernel * RBF (= sigma_f^2 exp(-(x-x')^2 / 2 l^2), the
paper's kernel) + WhiteKernel (the objective is a training run, hence noisy); EI is maximised over a dense grid.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Sum, WhiteKernel

from edge_vad.errors import EdgeVadError
from edge_vad.fileio import SHARED_FILE_MODE, atomic_target

DEFAULT_N_TOTAL = 15  # the issue asks for at least 15 evaluations of the objective
DEFAULT_N_INIT = 5  # Latin-hypercube points before EI takes over
GRID_POINTS = 1001  # EI is maximised over this many evenly spaced points of the bounds
MIN_SEPARATION = 0.01  # skip grid points this close (fraction of the range) to an observation: no re-sampling noise


@dataclass
class BOTrace:
    """What a run observed and the final GP on the grid: gp_mean and gp_std, the LATENT standard deviation of
    the mean curve (the fitted observation noise is in `kernel`). best_x / best_y: the observation with the
    lowest GP posterior mean (robust to a lucky noisy draw); best_y is the value actually observed there."""

    observations: list[tuple[float, float]]
    grid: list[float]
    gp_mean: list[float]
    gp_std: list[float]
    best_x: float
    best_y: float
    kernel: str
    n_init: int
    seed: int
    bounds: tuple[float, float] = (0.0, 1.0)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "observations": [[float(x), float(y)] for x, y in self.observations],
            "grid": [float(v) for v in self.grid],
            "gp_mean": [float(v) for v in self.gp_mean],
            "gp_std": [float(v) for v in self.gp_std],
            "best_x": float(self.best_x),
            "best_y": float(self.best_y),
            "kernel": self.kernel,
            "n_init": int(self.n_init),
            "seed": int(self.seed),
            "bounds": [float(self.bounds[0]), float(self.bounds[1])],
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BOTrace:
        return cls(
            observations=[(float(x), float(y)) for x, y in data["observations"]],
            grid=[float(v) for v in data["grid"]],
            gp_mean=[float(v) for v in data["gp_mean"]],
            gp_std=[float(v) for v in data["gp_std"]],
            best_x=float(data["best_x"]),
            best_y=float(data["best_y"]),
            kernel=str(data["kernel"]),
            n_init=int(data["n_init"]),
            seed=int(data["seed"]),
            bounds=(float(data["bounds"][0]), float(data["bounds"][1])),
            metadata=dict(data.get("metadata", {})),
        )


def fit_gp(xs: Sequence[float], ys: Sequence[float], bounds: tuple[float, float], seed: int = 0,
           noise: bool = True) -> GaussianProcessRegressor:
    """GP on 1-D inputs: ConstantKernel * RBF (+ WhiteKernel when `noise`), normalize_y, hyperparameters by
    maximum marginal likelihood with a few seeded restarts. The length-scale may not shrink below 1 % of the
    range, so a few points cannot be explained as unrelated spikes."""
    span = bounds[1] - bounds[0]
    rbf = RBF(length_scale=0.2 * span, length_scale_bounds=(0.01 * span, 10 * span))
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * rbf
    if noise:
        kernel = kernel + WhiteKernel(noise_level=1e-2, noise_level_bounds=(1e-6, 1.0))
    # alpha: jitter on the diagonal only, so a noise-free GP interpolates the observations.
    gp = GaussianProcessRegressor(kernel=kernel, alpha=1e-10, normalize_y=True, n_restarts_optimizer=2,
                                  random_state=seed)
    with warnings.catch_warnings():
        # Hyperparameters at a bound are expected with few points; the fit is still usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(np.asarray(xs, dtype=float).reshape(-1, 1), np.asarray(ys, dtype=float))
    return gp


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """EI for MINIMISATION (paper Exp. 12): E[max(0, best - f(x) - xi)] under f(x) ~ N(mean, std^2).
    Zero where std == 0 and mean >= best - xi; never negative."""
    mean = np.asarray(mean, dtype=float)
    std = np.asarray(std, dtype=float)
    gain = best - mean - xi
    ei = np.maximum(gain, 0.0)  # the std -> 0 limit
    pos = std > 1e-12
    z = gain[pos] / std[pos]
    ei[pos] = gain[pos] * norm.cdf(z) + std[pos] * norm.pdf(z)
    return np.maximum(ei, 0.0)  # round-off can leave -1e-17


def _initial_points(bounds: tuple[float, float], n: int, rng: np.random.Generator) -> list[float]:
    """1-D Latin hypercube: one uniform draw in each of n equal strata, in random order."""
    edges = np.linspace(bounds[0], bounds[1], n + 1)
    points = edges[:-1] + rng.uniform(0.0, 1.0, n) * (edges[1:] - edges[:-1])
    return [float(p) for p in rng.permutation(points)]


def minimize_1d(objective: Callable[[float], float], bounds: tuple[float, float] = (0.5, 5.0),
                n_init: int = DEFAULT_N_INIT, n_total: int = DEFAULT_N_TOTAL, seed: int = 0,
                progress: bool = True, xi: float = 0.01) -> BOTrace:
    """Minimise `objective` on [bounds] with n_total evaluations: n_init Latin-hypercube points, then each next x
    maximises EI of the current GP over a dense grid. No x is evaluated twice. `xi` is the EI margin in units of
    the observations' standard deviation (scale-free)."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if not hi > lo:
        raise EdgeVadError(f"Bayesian optimisation bounds must satisfy low < high, got {bounds}")
    if n_init < 2 or n_total < n_init:
        raise EdgeVadError(f"need 2 <= n_init <= n_total, got n_init={n_init}, n_total={n_total}")
    rng = np.random.default_rng(seed)
    grid = np.linspace(lo, hi, GRID_POINTS)
    min_gap = MIN_SEPARATION * (hi - lo)
    xs: list[float] = []
    ys: list[float] = []

    from tqdm.auto import tqdm  # lazy: only the training side needs it

    bar = tqdm(total=n_total, desc="Bayesian optimisation", disable=not progress, leave=False)
    pending = _initial_points((lo, hi), n_init, rng)
    try:
        while len(xs) < n_total:
            if pending:
                x = pending.pop(0)
            else:
                x = _next_point(xs, ys, grid, min_gap, (lo, hi), seed, xi)
            y = float(objective(x))
            if not np.isfinite(y):
                raise EdgeVadError(f"objective returned {y} at x={x:.4g}; it must be finite")
            xs.append(x)
            ys.append(y)
            bar.update(1)
            bar.set_postfix(x=f"{x:.3f}", y=f"{y:.4g}", best=f"{min(ys):.4g}")
    finally:
        bar.close()

    gp = fit_gp(xs, ys, (lo, hi), seed=seed)
    mean, std = posterior(gp, grid, ys)
    mean_at_obs = posterior(gp, np.asarray(xs), ys)[0]
    best = int(np.argmin(mean_at_obs))
    return BOTrace(observations=list(zip(xs, ys)), grid=grid.tolist(), gp_mean=mean.tolist(), gp_std=std.tolist(),
                   best_x=xs[best], best_y=ys[best], kernel=str(gp.kernel_), n_init=n_init, seed=seed,
                   bounds=(lo, hi))


def _next_point(xs: list[float], ys: list[float], grid: np.ndarray, min_gap: float,
                bounds: tuple[float, float], seed: int, xi: float) -> float:
    gp = fit_gp(xs, ys, bounds, seed=seed)
    mean, std = posterior(gp, grid, ys)
    # Noisy-EI plug-in: the incumbent is the best posterior mean at an observation, not a lucky noisy draw, and
    # the spread is the latent one; with the noise in it, EI stays positive next to the incumbent for ever and
    # the search keeps re-sampling the same spot.
    incumbent = float(np.min(posterior(gp, np.asarray(xs), ys)[0]))
    scale = float(np.std(ys)) or 1.0
    ei = expected_improvement(mean, std, best=incumbent, xi=xi * scale)
    free = np.min(np.abs(grid[:, None] - np.asarray(xs)[None, :]), axis=1) > min_gap
    if not free.any():
        raise EdgeVadError("every grid point has been evaluated; lower n_total or raise GRID_POINTS")
    ei = np.where(free, ei, -np.inf)
    if ei.max() <= 1e-12:
        # EI vanished everywhere (the GP is sure): explore where it is least sure instead of repeating itself.
        return float(grid[np.argmax(np.where(free, std, -np.inf))])
    return float(grid[np.argmax(ei)])


def posterior(gp: GaussianProcessRegressor, x: np.ndarray, ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """GP mean and LATENT standard deviation (observation noise of a WhiteKernel removed) at 1-D points x.
    scikit-learn's predictive std includes the white noise, scaled by std(y) under normalize_y."""
    mean, std = gp.predict(np.asarray(x, dtype=float).reshape(-1, 1), return_std=True)
    kernel = gp.kernel_
    if isinstance(kernel, Sum) and isinstance(kernel.k2, WhiteKernel):
        y_scale = float(np.std(ys)) if gp.normalize_y else 1.0
        noise_var = kernel.k2.noise_level * (y_scale if y_scale > 0 else 1.0) ** 2
        std = np.sqrt(np.maximum(std**2 - noise_var, 0.0))
    return mean, std


def plot_trace(trace: BOTrace, png_path: str | os.PathLike[str], xlabel: str = "temperature T",
               ylabel: str = "objective", title: str | None = None) -> Path:
    """A figure like the paper's Fig. 5: GP mean, 95 % band, numbered observations, the chosen x.
    Written atomically (temporary file, then os.replace)."""
    # A bare Figure renders with Agg and never touches pyplot's global backend or figure registry.
    from matplotlib.figure import Figure

    grid = np.asarray(trace.grid)
    mean = np.asarray(trace.gp_mean)
    std = np.asarray(trace.gp_std)
    fig = Figure(figsize=(7, 4.2), dpi=120)
    ax = fig.subplots()
    ax.fill_between(grid, mean - 1.96 * std, mean + 1.96 * std, color="tab:green", alpha=0.2,
                    label="95 % band")
    ax.plot(grid, mean, color="tab:blue", lw=2.0, label="GP mean")
    obs = np.asarray(trace.observations, dtype=float)
    ax.scatter(obs[:, 0], obs[:, 1], color="tab:red", zorder=3, s=22, label="observations")
    for i, (x, y) in enumerate(trace.observations, start=1):
        ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.axvline(trace.best_x, color="black", ls="--", lw=1.0, label=f"chosen {trace.best_x:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"Bayesian optimisation ({len(trace.observations)} evaluations)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(png_path)
    # SHARED_FILE_MODE whatever the umask: the figure is an ordinary, shareable artifact.
    with atomic_target(out, mode=SHARED_FILE_MODE) as tmp:
        fig.savefig(tmp, format="png")
    return out
