"""benchmarks/gpu_fine_stage.py on the CPU (--quick), as on a bare CUDA machine: only torch and the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_fine_stage.py"
# Run the script the way a machine without the editable install, numpy, OpenCV, open_clip or matplotlib would:
# drop the editable-install finder and make those imports fail.
BARE = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
for name in ('numpy', 'cv2', 'open_clip', 'matplotlib', 'torchvision'):
    sys.modules[name] = None
sys.argv = [{script!r}, *{args!r}]
runpy.run_path({script!r}, run_name='__main__')
"""


def _run_bare(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = BARE.format(script=str(SCRIPT), args=args)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_quick_cpu_run_writes_the_json(tmp_path):
    out = tmp_path / "gpu"
    proc = _run_bare(["--device", "cpu", "--quick", "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu_fine_stage.json").read_text())
    env = result["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and env["weights"].startswith("random")
    assert "gpu_fine_stage.py --device cpu --quick --out" in env["command"]
    assert "checkout" in env["edge_vad_models"]  # imported without the install
    assert result["quick"] is True

    encoder = result["fine_encoder"]
    assert encoder["impl"] == "torch" and "open_clip unavailable" in encoder["note"] and "QUICK" in encoder["name"]
    assert [(r["precision"], r["batch"]) for r in encoder["runs"]] == [("fp32", 1), ("fp32", 2)]
    assert all(r["median_ms"] > 0 and r["frames_per_s"] > 0 for r in encoder["runs"])
    lite = result["lite0_trunk"]
    if "skipped" in lite:  # efficientnet_lite_pytorch absent: a reason, never a silent gap
        assert "efficientnet_lite_pytorch" in lite["skipped"]
    else:
        assert lite["impl"].startswith("efficientnet_lite_pytorch direct")  # backbones needs cv2, blocked here
        assert lite["gflops_per_frame"] == pytest.approx(0.77, rel=0.03)
    head = result["fine_head"]
    assert head["step"]["median_ms"] > 0 and head["snippet_parallel"]["frames"] == 16
    assert head["snippet_parallel"]["gflops"] == pytest.approx(16 * head["step"]["gflops"], rel=0.01)
    rows = result["rwkv_vs_transformer"]["rows"]
    assert [r["length"] for r in rows] == [16, 32]
    assert {"length", "rwkv_ms", "rwkv_recurrent_ms", "transformer_ms", "rwkv_gflops", "transformer_gflops",
            "speedup"} <= set(rows[0])
    assert result["fig4_png"].startswith("skipped")  # matplotlib blocked: said, not crashed
    md = (out / "gpu_fine_stage.md").read_text()
    assert "| fine head, one step |" in md and "Fig. 4 analog" in md


def test_cuda_without_a_gpu_is_one_error_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _run_bare(["--device", "cuda", "--out", str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no CUDA device" in errors[0]
    assert not (tmp_path / "gpu_fine_stage.json").exists()
