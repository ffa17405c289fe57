"""The runtime on every supported Python (3.8, JetPack 5, to 3.13): README "Python versions and hosts".

- the runtime's source uses nothing newer than 3.8 (vermin, annotations counted as evaluated: pydantic and typer
  evaluate them at run time);
- pyproject.toml, the installer and this file name the same oldest and newest version;
- `pip install <checkout>` into a fresh venv on the OLDEST and the NEWEST supported interpreter (pyenv's or one on
  PATH; skipped with the reason where absent), then `edge-vad run` on 64 frames (2.56 s) of the sample with
  --report: exit 0, the report files, and per-frame scores equal to this interpreter's run of the same frames.
  Needs the package index (PyPI) like the README's first command; about 1-2 min per interpreter.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "benchmarks" / "data" / "sample-stream.mp4"
OLDEST, NEWEST = (3, 8), (3, 13)  # README "Python versions and hosts"; deploy/install.sh has the same two
CLIP_FRAMES = 64  # 2.56 s of the 25 fps sample: past the QACM window (31 frames), short enough for CI
SAME_SCORE_TOL = 1e-4  # scores.csv keeps 6 decimals; numpy / onnxruntime builds differ across Pythons
PIP_TIMEOUT_S = 420
RUN_TIMEOUT_S = 240


# ----------------------------------------------------------------------------- static checks (fast)
def test_runtime_source_needs_nothing_newer_than_the_oldest_python():
    """vermin parses edge_vad/ for language features and standard-library members newer than OLDEST. Annotations
    count as evaluated (--eval-annotations): pydantic models and typer commands evaluate them on import, so
    `list[int]` or `X | None` there fails on 3.8; use typing.List / Optional (common rules). `# novm` marks a line
    that is guarded by a version check (edge_vad/compat.py)."""
    vermin = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(vermin).exists():
        pytest.skip("vermin not installed (it is in the dev extra: pip install -e '.[dev]')")
    target = "%d.%d-" % OLDEST
    proc = subprocess.run([vermin, f"--target={target}", "--violations", "--eval-annotations", "--no-tips",
                           "--processes=1", str(REPO_ROOT / "edge_vad")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"edge_vad/ needs a Python newer than {target}:\n{proc.stdout}{proc.stderr}"


def test_pyproject_and_installer_name_the_same_supported_pythons():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=%d.%d" % OLDEST
    install = (REPO_ROOT / "deploy" / "install.sh").read_text()
    assert re.search(r"^OLDEST_PYTHON=%d\.%d$" % OLDEST, install, flags=re.M)
    assert re.search(r"^NEWEST_PYTHON=%d\.%d$" % NEWEST, install, flags=re.M)
    deps = " ".join(project["dependencies"])
    assert "tomli" in deps and "python_version < '3.11'" in deps  # tomllib is 3.11+ (config.py, bench/profiles.py)


# ----------------------------------------------------------------------------- fresh installs (slow)
def _reports_version(python: str, version: tuple) -> bool:
    """True when `python` runs and is `version` (a pyenv shim for an inactive version does not run)."""
    try:
        proc = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=60)
    except OSError:
        return False
    return proc.returncode == 0 and proc.stdout.strip() == "%d.%d" % version


def find_python(version: tuple) -> Optional[Path]:
    """An interpreter of `version`: the newest pyenv build of it, else pythonX.Y on PATH."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    builds = sorted(glob.glob(str(root / "versions" / ("%d.%d.*" % version) / "bin" / "python")),
                    key=lambda p: [int(x) for x in re.findall(r"\d+", Path(p).parents[1].name)], reverse=True)
    candidates = [*builds, shutil.which("python%d.%d" % version)]
    return next((Path(c) for c in candidates if c and _reports_version(c, version)), None)


def read_scores(path: Path) -> Dict[int, float]:
    with open(path, newline="") as f:
        return {int(row["frame"]): float(row["coarse_score"]) for row in csv.DictReader(f)}


def run_edge_vad(command: List[str], clip: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGE_VAD_ONNX_CACHE": str(out / "onnx-cache"), "MPLBACKEND": "Agg"}
    return subprocess.run([*command, "run", "--source", str(clip), "--backend", "onnxruntime", "--no-http",
                           "--report", str(out / "report"), "--events-dir", str(out / "events")],
                          cwd=out, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def sample_clip(tmp_path_factory) -> Path:
    """The sample's first CLIP_FRAMES frames as a video file (the README's first command reads a file too)."""
    import cv2

    from edge_vad_test_support.bundles import write_video

    cap = cv2.VideoCapture(str(SAMPLE))
    frames = []
    while len(frames) < CLIP_FRAMES:
        ok, frame = cap.read()
        assert ok, f"{SAMPLE} has fewer than {CLIP_FRAMES} frames"
        frames.append(frame)
    cap.release()
    return write_video(tmp_path_factory.mktemp("clip") / "sample-2.5s.mp4", frames, 25.0)


@pytest.fixture(scope="module")
def reference_scores(sample_clip: Path, tmp_path_factory) -> Dict[int, float]:
    """The same run in this test's interpreter (the development install)."""
    out = tmp_path_factory.mktemp("reference")
    proc = run_edge_vad([sys.executable, "-c", "from edge_vad.cli import main; main()"], sample_clip, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_scores(out / "report" / "scores.csv")


@pytest.mark.slow
@pytest.mark.timeout(PIP_TIMEOUT_S + RUN_TIMEOUT_S + 60)
@pytest.mark.parametrize("version", [OLDEST, NEWEST], ids=["oldest", "newest"])
def test_fresh_install_runs_the_sample(version: tuple, sample_clip: Path, reference_scores: Dict[int, float],
                                       tmp_path: Path) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip("Python %d.%d not found (python%d.%d on PATH or ~/.pyenv/versions/%d.%d.*); install it, e.g. "
                    "`pyenv install %d.%d`, to run this check" % (version * 4))
    venv = tmp_path / "venv"
    made = subprocess.run([str(python), "-m", "venv", str(venv)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    assert _reports_version(str(venv / "bin" / "python"), version), python
    found = "%d.%d" % version

    # The README's `pip install .`: the base runtime, no extras, built from this checkout on that interpreter
    # (--no-compile: byte-compiling scipy & co. is most of the install's CPU time; imports compile what they use).
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                          "--no-compile", "--progress-bar", "off", str(REPO_ROOT)],
                         capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    assert pip.returncode == 0, f"pip install on Python {found} failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}"

    proc = run_edge_vad([str(venv / "bin" / "edge-vad")], sample_clip, tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    report = tmp_path / "report"
    assert sorted(p.name for p in report.iterdir()) == ["curve.png", "events.jsonl", "scores.csv"]
    assert (report / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scores = read_scores(report / "scores.csv")
    assert sorted(scores) == list(range(CLIP_FRAMES))
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores.values()), scores
    worst = max(abs(scores[i] - reference_scores[i]) for i in scores)
    assert worst <= SAME_SCORE_TOL, f"Python {found}: max |score - reference| = {worst:.2e}"
