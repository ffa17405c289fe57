"""The on-device runtime must never import torch: import every `edge_vad` module, and run the
CLI's help, in a fresh interpreter where importing torch raises."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from edge_vad_test_support.no_torch import BLOCK_TORCH


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_blocker_really_blocks():
    # Guards the test itself: if the blocker did nothing, the test below would prove nothing.
    proc = _run("import torch")
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr


def test_every_runtime_module_imports_without_torch():
    proc = _run(
        """
        import importlib, pkgutil, edge_vad
        names = [m.name for m in pkgutil.walk_packages(edge_vad.__path__, "edge_vad.") if not m.name.endswith("__main__")]
        for name in names:
            importlib.import_module(name)
        assert "torch" not in sys.modules
        print(len(names))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 5


def test_cli_help_without_torch():
    proc = _run(
        """
        sys.argv = ["edge-vad", "--help"]
        from edge_vad.cli import main
        try:
            main()
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
        assert "torch" not in sys.modules
        """
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "bench", "export", "train", "eval", "score", "explain", "models", "validate-config"):
        assert command in proc.stdout
