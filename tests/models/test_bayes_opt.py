"""1-D Bayesian optimisation (GP + Expected Improvement) used to choose the distillation temperature."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="needs scikit-learn")

from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.training.bayes_opt import (  # noqa: E402
    BOTrace,
    expected_improvement,
    fit_gp,
    minimize_1d,
    plot_trace,
)


def _noisy_parabola(seed: int):
    rng = np.random.default_rng(seed)
    calls: list[float] = []

    def f(x: float) -> float:
        calls.append(x)
        return (x - 2.7) ** 2 + 0.05 * rng.standard_normal()

    return f, calls


@pytest.fixture(scope="module")
def parabola_trace():
    f, calls = _noisy_parabola(123)
    return minimize_1d(f, bounds=(0.5, 5.0), n_init=5, n_total=15, seed=0, progress=False), calls


def test_finds_minimum_of_noisy_parabola(parabola_trace):
    trace, _ = parabola_trace
    assert abs(trace.best_x - 2.7) <= 0.2
    assert 0.5 <= trace.best_x <= 5.0


def test_fifteen_distinct_evaluations_in_bounds(parabola_trace):
    trace, calls = parabola_trace
    xs = [x for x, _ in trace.observations]
    assert len(calls) == 15 and xs == calls
    assert len(set(np.round(xs, 9))) == 15
    assert min(np.diff(np.sort(xs))) > 0
    assert all(0.5 <= x <= 5.0 for x in xs)
    # The first n_init points form a Latin hypercube: one in each fifth of the range.
    strata = sorted(int((x - 0.5) // 0.9) for x in xs[:5])
    assert strata == [0, 1, 2, 3, 4]


def test_final_gp_on_grid(parabola_trace):
    trace, _ = parabola_trace
    assert len(trace.grid) == len(trace.gp_mean) == len(trace.gp_std) > 100
    assert min(trace.gp_std) >= 0
    grid = np.asarray(trace.grid)
    # The GP mean is lowest near the true minimum and high at the ends of the range.
    assert abs(grid[int(np.argmin(trace.gp_mean))] - 2.7) <= 0.3
    assert trace.gp_mean[0] > 2.0 and trace.gp_mean[-1] > 2.0
    assert "RBF" in trace.kernel and "WhiteKernel" in trace.kernel


def test_same_seed_same_trace():
    a = minimize_1d(lambda x: (x - 1.3) ** 2, bounds=(0.5, 5.0), n_init=3, n_total=6, seed=7, progress=False)
    b = minimize_1d(lambda x: (x - 1.3) ** 2, bounds=(0.5, 5.0), n_init=3, n_total=6, seed=7, progress=False)
    assert a.observations == b.observations


def test_expected_improvement_properties():
    mean = np.array([0.0, 1.0, 2.0, 1.0])
    std = np.array([0.0, 0.0, 0.5, 1.0])
    ei = expected_improvement(mean, std, best=1.0)
    assert np.all(ei >= 0)
    assert ei[0] == pytest.approx(1.0)  # certain improvement of 1
    assert ei[1] == 0.0  # no improvement, no uncertainty
    assert ei[3] == pytest.approx(1.0 / np.sqrt(2 * np.pi))  # gain 0, std 1: std * pdf(0)
    assert ei[2] < ei[3]


def test_ei_vanishes_at_observed_points_without_noise():
    xs = [0.7, 1.5, 2.2, 3.1, 4.4]
    ys = [np.sin(3 * x) + 0.3 * x for x in xs]
    gp = fit_gp(xs, ys, (0.5, 5.0), noise=False)
    mean, std = gp.predict(np.asarray(xs).reshape(-1, 1), return_std=True)
    np.testing.assert_allclose(mean, ys, atol=1e-4)
    ei = expected_improvement(mean, std, best=min(ys))
    assert np.all(ei >= 0) and np.all(ei <= 1e-4)
    grid = np.linspace(0.5, 5.0, 201).reshape(-1, 1)
    m, s = gp.predict(grid, return_std=True)
    assert expected_improvement(m, s, best=min(ys)).max() > 1e-3  # elsewhere it is not zero


def test_json_round_trip(parabola_trace):
    trace, _ = parabola_trace
    trace.metadata = {"note": "x"}
    back = BOTrace.from_json(json.loads(json.dumps(trace.to_json())))
    assert back == trace


def test_plot_written(parabola_trace, tmp_path):
    trace, _ = parabola_trace
    out = plot_trace(trace, tmp_path / "sub" / "bo.png", ylabel="f")
    data = out.read_bytes()
    assert out == tmp_path / "sub" / "bo.png" and len(data) > 5000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["bo.png"]  # no temporary left behind


@pytest.mark.parametrize("kwargs", [{"bounds": (2.0, 1.0)}, {"n_init": 1}, {"n_init": 5, "n_total": 4}])
def test_bad_arguments(kwargs):
    with pytest.raises(EdgeVadError):
        minimize_1d(lambda x: x, progress=False, **kwargs)


def test_non_finite_objective_is_an_error():
    with pytest.raises(EdgeVadError, match="finite"):
        minimize_1d(lambda x: float("nan"), n_init=2, n_total=3, progress=False)


def test_latent_std_excludes_fitted_noise():
    # posterior() must equal a GP with the fitted signal kernel and the fitted noise as fixed diagonal alpha.
    from sklearn.gaussian_process import GaussianProcessRegressor

    from edge_vad_models.training.bayes_opt import posterior

    rng = np.random.default_rng(0)
    xs = list(np.linspace(0.6, 4.9, 12))
    ys = [np.cos(x) + 0.3 * rng.standard_normal() for x in xs]
    gp = fit_gp(xs, ys, (0.5, 5.0))
    assert gp.kernel_.k2.noise_level > 1e-3  # the noise is real here, so the check means something
    ref = GaussianProcessRegressor(gp.kernel_.k1, alpha=gp.kernel_.k2.noise_level, optimizer=None,
                                   normalize_y=True).fit(np.asarray(xs)[:, None], ys)
    grid = np.linspace(0.5, 5.0, 31)
    mean, std = posterior(gp, grid, ys)
    ref_mean, ref_std = ref.predict(grid[:, None], return_std=True)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-6)
    np.testing.assert_allclose(std, ref_std, atol=1e-6)
    assert np.all(std < gp.predict(grid[:, None], return_std=True)[1])
