"""Shared test fixtures: where the real data lives, and skips that say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_vad.bundle.package_weights import CACHE_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real clips, UCSD Ped2, benchmark ground truth); skip where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present in the project's workspace)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Graphs whose weights are laid out from a pip package go to a session folder, never to ~/.cache."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv(CACHE_ENV, str(folder))
    yield folder
    mp.undo()
