"""scripts/arm64-check.sh (arm64 under qemu vs x86-64) and its comparer, scripts/arm64_compare.py.

The comparer's rules run everywhere (fast). The emulated run itself takes tens of minutes the first time and
needs root, mmdebstrap, qemu-user-static, binfmt-support and the package index: it runs only when
EDGE_VAD_ARM64_CHECK=1 asks for it (skipped with that reason otherwise).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_vad.bundle.manifest import default_bundle_dir
from edge_vad.bundle.verify import verify_bundle
from edge_vad.resize import exact_area_resize

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "arm64-check.sh"
RUN_ENV = "EDGE_VAD_ARM64_CHECK"


def _load_comparer():
    spec = importlib.util.spec_from_file_location("arm64_compare", REPO / "scripts" / "arm64_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cmp = _load_comparer()


def _scores(folder: Path, values) -> None:
    (folder / "report").mkdir(parents=True)
    rows = "".join(f"{i},{i / 25:.6f},{v:.6f},0,\n" for i, v in enumerate(values))
    (folder / "report" / "scores.csv").write_text("frame,time_s,coarse_score,gate_open,fine_class\n" + rows)


def _probe(folder: Path, frames: np.ndarray, area: np.ndarray) -> None:
    (folder / "probe").mkdir(parents=True)
    np.savez_compressed(folder / "probe" / "resize.npz", exact_area=frames, area=area)
    (folder / "probe" / "versions.json").write_text(json.dumps({"machine": folder.name}))


def test_script_parses_and_explains_itself():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30).stdout
    assert "mmdebstrap" in out and "cpuinfo" in out and "--bundle DIR" in out


def test_exact_area_copy_verifies_and_changes_only_the_resize(tmp_path: Path):
    shipped = default_bundle_dir()
    summary = cmp.exact_area_copy(shipped, tmp_path / "copy")
    assert ": OK (" in summary and not (tmp_path / "copy.tmp").exists()
    before = json.loads((shipped / "manifest.json").read_text())
    after = json.loads((tmp_path / "copy" / "manifest.json").read_text())
    assert after["preprocessing"]["interpolation"] == "exact-area" == cmp.bundle_interpolation(tmp_path / "copy")
    for key in ("interpolation", "resize"):
        before["preprocessing"].pop(key), after["preprocessing"].pop(key)
    assert before == after
    verify_bundle(tmp_path / "copy")  # every artifact hash still matches


def test_compare_holds_exact_area_bundles_to_the_goal_only(tmp_path: Path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    off_by_one = frames.copy()
    off_by_one[1, 2, 3, 0] ^= 1
    x86, arm = tmp_path / "x86", tmp_path / "arm64"
    _probe(x86, frames, frames)
    _probe(arm, frames, off_by_one)
    base = np.linspace(0.01, 0.9, 40)
    _scores(x86 / "shipped.onnxruntime", base)
    _scores(arm / "shipped.onnxruntime", base + 0.006)  # 'area' bundle: reported, not held to 1e-4
    _scores(x86 / "shipped-exact-area.onnxruntime", base)
    _scores(arm / "shipped-exact-area.onnxruntime", base + 0.00005)
    interp = {"shipped": "area", "shipped-exact-area": "exact-area"}
    assert cmp.compare(x86, arm, tmp_path / "out", interp) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = {r["case"]: r for r in report["cases"]}
    assert rows["shipped.onnxruntime"]["goal"] == "not held"
    assert rows["shipped.onnxruntime"]["max_abs_diff"] == pytest.approx(0.006, abs=2e-6)
    assert rows["shipped-exact-area.onnxruntime"]["goal"] == "met"
    assert report["resize"]["exact-area"]["differing_values"] == 0
    assert report["resize"]["area"] == {"frames": 3, "identical_frames": 2, "differing_values": 1,
                                        "fraction": pytest.approx(1 / frames.size), "max_abs": 1}
    assert "| shipped-exact-area | exact-area | onnxruntime | 40 |" in (tmp_path / "out" / "report.md").read_text()

    # the int8 TFLite path is held to the int8 goal (its kernels round differently per architecture)
    _scores(x86 / "shipped-exact-area.tflite", base)
    _scores(arm / "shipped-exact-area.tflite", base + 0.016)
    assert cmp.compare(x86, arm, tmp_path / "out", interp) == 0
    shutil.rmtree(arm / "shipped-exact-area.tflite")
    _scores(arm / "shipped-exact-area.tflite", base + 0.05)
    assert cmp.compare(x86, arm, tmp_path / "out", interp) == 1
    shutil.rmtree(arm / "shipped-exact-area.tflite")
    shutil.rmtree(x86 / "shipped-exact-area.tflite")

    # an exact-area bundle over the goal, or a case missing on one side, fails the check
    shutil.rmtree(arm / "shipped-exact-area.onnxruntime")
    _scores(arm / "shipped-exact-area.onnxruntime", base + 0.0002)
    assert cmp.compare(x86, arm, tmp_path / "out", interp) == 1
    shutil.rmtree(arm / "shipped-exact-area.onnxruntime")
    assert cmp.compare(x86, arm, tmp_path / "out", interp) == 1
    row = json.loads((tmp_path / "out" / "report.json").read_text())["cases"][0]
    assert row["error"].startswith("no arm64 result") and row["goal"] == "MISSED"


def test_probe_records_both_resizes(tmp_path: Path):
    import cv2

    frame = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 256, (360, 640, 3), dtype=np.uint8), (5, 5), 2)
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "00000.png"), frame)
    cmp.probe(tmp_path / "frames", tmp_path / "probe")
    saved = np.load(tmp_path / "probe" / "resize.npz")
    assert np.array_equal(saved["exact_area"][0], exact_area_resize(frame, 224))
    assert np.array_equal(saved["area"][0], cv2.resize(frame, (224, 224), interpolation=cv2.INTER_AREA))
    versions = json.loads((tmp_path / "probe" / "versions.json").read_text())
    assert versions["edge_vad"] and versions["numpy"] == np.__version__


@pytest.mark.slow
def test_emulated_arm64_scores_match_x86():
    """The whole check, on request: it builds (or reuses) runs/arm64 and needs about 15-40 min under qemu."""
    if os.environ.get(RUN_ENV) != "1":
        pytest.skip(f"emulated arm64 run takes tens of minutes; set {RUN_ENV}=1 to run it (needs root, "
                    "mmdebstrap, qemu-user-static, binfmt-support and the package index)")
    if os.geteuid() != 0 or not shutil.which("mmdebstrap"):
        pytest.skip("needs root and mmdebstrap (apt-get install mmdebstrap qemu-user-static binfmt-support)")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=4 * 3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((REPO / "runs" / "arm64" / "share" / "results" / "report.json").read_text())
    held = [r for r in report["cases"] if r["interpolation"] == "exact-area"]
    assert held and all(r["goal"] == "met" for r in held), report["cases"]
    assert report["resize"]["exact-area"]["differing_values"] == 0
