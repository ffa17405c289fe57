"""CLI structure: help, version, validate-config, and commands that are not built yet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from edge_vad import __version__

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_vad", *args], capture_output=True, text=True, timeout=300)


def test_version():
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"edge-vad {__version__}"


def test_validate_config_ok_and_errors(tmp_path):
    ok = cli("validate-config", str(REPO_ROOT / "deploy" / "edge-vad.toml"))
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gate]\non_threshold = 2\nfoo = 1\n")
    proc = cli("validate-config", str(bad))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(str(bad) in line for line in lines)
    assert "Traceback" not in proc.stderr


def test_validate_config_missing_file_is_one_line(tmp_path):
    proc = cli("validate-config", str(tmp_path / "missing.toml"))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "not found" in proc.stderr and "Traceback" not in proc.stderr
