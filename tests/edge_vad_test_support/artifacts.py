"""Where tests save what people look at afterwards (screenshots, entity lists): $EDGE_VAD_TEST_ARTIFACTS,
else test-artifacts/ in the checkout (git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("EDGE_VAD_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
