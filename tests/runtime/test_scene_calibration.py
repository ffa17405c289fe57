"""Scene calibration without torch: fitting, applying, the folder it is written to, and refusing what does not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_vad.errors import EdgeVadError
from edge_vad.runtime.calibration_store import ARRAYS_FILE, MANIFEST_FILE, load_calibration, write_calibration
from edge_vad.runtime.scene_calibration import (GRID, Footage, SceneModel, SceneState, fit_scene_model,
                                                frame_features, region_means)

C = 8  # F_A channels of the synthetic scene


def normal_stream(rng: np.random.Generator, frames: int, busy_region: int = 10):
    """A scene whose region `busy_region` always moves a little; everything else is still and looks the same."""
    base = rng.uniform(60, 200, (224, 224))
    greys, maps = [], []
    for _ in range(frames):
        g = base + rng.normal(0, 1.0, base.shape)
        r, c = divmod(busy_region, GRID)
        g[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32] += rng.normal(0, 12, (32, 32))
        greys.append(np.clip(g, 0, 255).astype(np.uint8))
        maps.append(rng.normal(0, 1, (C, 7, 7)).astype(np.float32) * 0.1 + 1.0)
    return greys, maps


def observe(greys, maps):
    state, motion, appearance = SceneState(), [], []
    for g, a in zip(greys, maps):
        m, app, state = frame_features(g, a, state)
        motion.append(m)
        appearance.append(app)
    return np.stack(motion), np.stack(appearance)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    footage = Footage()
    for _ in range(2):
        m, a = observe(*normal_stream(rng, 80))
        footage.add_stream(m, a, rng.normal(-3.0, 0.5, len(m)))
    return fit_scene_model(footage), rng


def test_region_means_split_uneven_maps_into_the_grid():
    a = np.arange(14 * 15, dtype=np.float32).reshape(14, 15)
    r = region_means(a, 7)
    assert r.shape == (49,)
    assert r[0] == pytest.approx(a[:2, :2].mean()) and r[-1] == pytest.approx(a[12:, 13:].mean())


def test_motion_where_the_scene_is_still_is_the_top_evidence(fitted):
    model, rng = fitted
    greys, maps = normal_stream(rng, 20)
    greys = [g.copy() for g in greys]
    for t in range(10, 20):  # something moves through region (3, 3), which never moved on the footage
        greys[t][96:128, 96:128] = (t * 37) % 255
    motion, appearance = observe(greys, maps)
    evidence = model.evidence(motion, appearance)
    assert evidence.shape == (20, GRID * GRID)
    assert int(np.argmax(evidence[15])) == 3 * GRID + 3
    # the busy region moves as much as on the footage: no evidence there
    assert evidence[5, 10] < evidence[15, 3 * GRID + 3] / 4
    calm = model.calibrated_logit(np.full(10, -3.0), evidence[:10])
    moving = model.calibrated_logit(np.full(10, -3.0), evidence[10:])
    assert moving.min() > calm.max()
    assert 1 / (1 + np.exp(-calm.mean())) < 0.1  # footage-like frames score low


def test_the_bundle_logit_counts_too(fitted):
    model, rng = fitted
    motion, appearance = observe(*normal_stream(rng, 10))
    evidence = model.evidence(motion, appearance)
    assert (model.calibrated_logit(np.full(10, 2.0), evidence) > model.calibrated_logit(np.full(10, -3.0), evidence)).all()


def test_too_little_footage_is_one_clear_error():
    rng = np.random.default_rng(1)
    footage = Footage()
    m, a = observe(*normal_stream(rng, 20))
    footage.add_stream(m, a, np.zeros(len(m)))
    with pytest.raises(EdgeVadError, match="at least"):
        fit_scene_model(footage)


def _fields(sha: str = "a" * 64) -> dict:
    return {"bundle_checkpoint_sha256": sha, "backend": "onnxruntime", "sources": ["cam.mp4"], "frames": 300,
            "seconds": 30.0, "grid": GRID, "appearance_dims": 16, "blend": "test",
            "footage_scores": {"q0.5": 0.02},
            "gate": {"on_threshold": 0.6, "off_threshold": 0.3, "events": 0, "hours": 0.01, "allowed_events": 0,
                     "target_per_hour": 1.0, "rule": "test"}}


class _Bundle:
    def __init__(self, sha: str):
        self.source_checkpoints = {"coarse.pt": sha}


def test_calibration_folder_round_trip_and_checks(fitted, tmp_path: Path):
    model, _ = fitted
    folder = tmp_path / "cam"
    write_calibration(folder, model, _fields())
    assert sorted(p.name for p in folder.iterdir()) == sorted([ARRAYS_FILE, MANIFEST_FILE])  # no temporary left
    calib = load_calibration(folder, _Bundle("a" * 64))
    assert calib.manifest.gate.on_threshold == 0.6
    for name in SceneModel.ARRAYS:
        np.testing.assert_array_equal(getattr(calib.model, name), getattr(model, name))
    assert calib.model.scene_spread == pytest.approx(model.scene_spread)
    with pytest.raises(EdgeVadError, match="another model"):
        load_calibration(folder, _Bundle("b" * 64))
    (folder / ARRAYS_FILE).write_bytes(b"not the arrays")
    with pytest.raises(EdgeVadError, match="sha256"):
        load_calibration(folder)
    with pytest.raises(EdgeVadError, match="edge-vad calibrate"):
        load_calibration(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / MANIFEST_FILE).write_text(json.dumps({"format": "x"}))
    with pytest.raises(EdgeVadError, match="not a valid calibration manifest"):
        load_calibration(bad)
