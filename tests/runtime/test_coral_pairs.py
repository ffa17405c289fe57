"""Coral runtime pairing: which TFLite interpreter works with which libedgetpu (edge_vad/backends/coral_pairs.py),
how the installed libedgetpu is named, which interpreter the Edge TPU backend takes, what it logs, and that the
`coral` extra and the installer pick what the table says."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from edge_vad.backends import coral_pairs as cp
from edge_vad.backends import edgetpu_runtime as etr

REPO = Path(__file__).resolve().parents[2]

DPKG = """Package: libusb-1.0-0
Status: install ok installed
Version: 2:1.0.26-1

Package: libedgetpu1-max
Status: deinstall ok config-files
Version: 15.0

Package: {package}
Status: install ok installed
Priority: optional
Architecture: arm64
Version: {version}
Description: Support library for Edge TPU
 multi-line description
"""


def _status(tmp_path: Path, package: str, version: str) -> Path:
    path = tmp_path / "status"
    path.write_text(DPKG.format(package=package, version=version))
    return path


def test_the_installed_libedgetpu_is_named_from_its_debian_package(tmp_path: Path) -> None:
    coral = cp.identify_build(cp.installed_package(_status(tmp_path, "libedgetpu1-std", "16.0")), 14)
    assert (coral.runtime, coral.tf) == ("coral-16.0", (2, 5)) and "Coral's apt release" in coral.name
    community = cp.identify_build(cp.installed_package(_status(tmp_path, "libedgetpu1-max", "16.0tf2.17.1-1")), 14)
    assert (community.runtime, community.tf) == ("community", (2, 17, 1)) and "16.0tf2.17.1" in community.name
    assert cp.installed_package(tmp_path / "no-dpkg-here") is None
    bare = cp.identify_build(None, 14)  # a library from a tarball: only edgetpu_version() to go by
    assert bare.runtime == "unknown" and "Edge TPU runtime 14" in bare.name
    assert etr.runtime_number("BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), RuntimeVersion(14)") == 14


@pytest.mark.parametrize("runtime, tf, interpreter, version, status, words", [
    ("coral-16.0", (2, 5), "tflite-runtime", "2.5.0.post1", "works", "documented to work"),
    ("coral-16.0", (2, 5), "tflite-runtime", "2.11.0", "works", "reported to work"),
    ("coral-16.0", (2, 5), "tflite-runtime", "2.14.0", "fails", "segfault"),
    ("coral-16.0", (2, 5), "ai-edge-litert", "2.3.0", "fails", "expected to fail"),
    ("coral-15.0", None, "tflite-runtime", "2.1.0.post1", "fails", "Unsupported data type in custom op handler"),
    ("community", (2, 17, 1), "tflite-runtime", "2.17.1", "works", "Frigate"),
    ("community", (2, 17, 1), "tflite-runtime", "2.16.1", "unknown", "not a pair known to work"),
    ("community", (2, 17, 1), "ai-edge-litert", "2.3.0", "unknown", "not a pair known to work"),
    ("unknown", None, "tflite-runtime", "2.11.0", "unknown", "not a pair known to work"),
])
def test_pairs(runtime, tf, interpreter, version, status, words) -> None:
    verdict = cp.check_pair(cp.LibedgetpuBuild(runtime, f"libedgetpu ({runtime})", tf), interpreter, version)
    assert verdict.status == status and words in verdict.line and "https://" in verdict.line
    assert verdict.line.startswith(f"{interpreter} {version} with libedgetpu ({runtime}): ")


def test_every_pair_cites_a_source() -> None:
    for pair in cp.PAIRS:
        assert "https://" in pair.source or "Frigate" in pair.source, pair


def test_the_edgetpu_backend_takes_the_interpreter_known_to_work(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(etr, "runtime_version", lambda: None)
    monkeypatch.setattr(etr, "installed_interpreters", lambda: [("ai_edge_litert", "ai-edge-litert", "2.3.0"),
                                                                ("tflite_runtime", "tflite-runtime", "2.11.0")])
    module, verdict = etr.edgetpu_interpreter(_status(tmp_path, "libedgetpu1-std", "16.0"))
    assert module == "tflite_runtime" and verdict.known_to_work
    monkeypatch.setattr(etr, "installed_interpreters", lambda: [("ai_edge_litert", "ai-edge-litert", "2.3.0")])
    module, verdict = etr.edgetpu_interpreter(_status(tmp_path, "libedgetpu1-std", "16.0"))
    assert module == "ai_edge_litert" and verdict.status == "fails"


def test_the_backend_logs_the_pair_once_info_when_known_warning_when_not(caplog, monkeypatch) -> None:
    from edge_vad.backends import tflite_backend

    monkeypatch.setattr(tflite_backend, "runtime_version", lambda: "BuildLabel(X), RuntimeVersion(14)")
    good = cp.check_pair(cp.LibedgetpuBuild("coral-16.0", "libedgetpu 16.0", (2, 5)), "tflite-runtime", "2.11.0")
    bad = cp.check_pair(cp.LibedgetpuBuild("coral-16.0", "libedgetpu 16.0", (2, 5)), "ai-edge-litert", "2.3.0")
    for verdict, level in ((good, logging.INFO), (bad, logging.WARNING)):
        monkeypatch.setattr(tflite_backend, "_versions_logged", tflite_backend.threading.Event())
        caplog.clear()
        with caplog.at_level(logging.INFO):
            tflite_backend._log_pair("tflite_runtime", verdict)
            tflite_backend._log_pair("tflite_runtime", verdict)  # once per process
        (record,) = caplog.records
        assert record.levelno == level and verdict.line in record.message and "RuntimeVersion(14)" in record.message


def _coral_extra() -> list:
    tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["coral"]


def test_the_coral_extra_installs_what_the_table_recommends_per_python() -> None:
    extra = _coral_extra()
    old = [r for r in extra if r.startswith("tflite-runtime")]
    new = [r for r in extra if r.startswith("ai-edge-litert")]
    assert old == ["tflite-runtime==2.11.0; python_version < '3.10' and (platform_machine == 'x86_64' or "
                   "platform_machine == 'aarch64')"]
    assert "numpy<2; python_version < '3.10'" in extra  # every tflite-runtime wheel is built for numpy 1.x
    assert len(new) == 1 and "python_version >= '3.10'" in new[0]
    coral16 = cp.LibedgetpuBuild("coral-16.0", "libedgetpu 16.0", (2, 5))
    for python in ((3, 8), (3, 9)):
        installs, works, _ = cp.pypi_choice(python)
        assert installs.startswith("tflite-runtime 2.11.0") and works
        assert cp.check_pair(coral16, "tflite-runtime", "2.11.0").known_to_work
    for python in ((3, 10), (3, 11), (3, 12), (3, 13)):
        installs, works, line = cp.pypi_choice(python)
        assert installs == "ai-edge-litert" and not works and "neither is on PyPI" in line
        assert cp.check_pair(coral16, "ai-edge-litert", "2.3.0").status == "fails"


def test_the_table_runs_as_a_script_with_only_the_standard_library(tmp_path: Path) -> None:
    script = REPO / "edge_vad" / "backends" / "coral_pairs.py"
    for python, words in (("3.9", "coral extra on Python 3.9: tflite-runtime 2.11.0 (numpy<2); pairs with"),
                          ("3.12", "coral extra on Python 3.12: ai-edge-litert; NOT known to pair with")):
        out = subprocess.run([sys.executable, "-S", str(script), "--python", python], capture_output=True, text=True,
                             timeout=60, cwd=str(tmp_path))  # -S: no site-packages, as before anything is installed
        assert out.returncode == 0 and out.stdout.startswith(words), out.stderr


def test_the_installer_check_says_when_there_is_no_libedgetpu(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(etr, "edgetpu_library_path", lambda: None)
    verdict = etr.coral_pair_verdict(tmp_path / "no-dpkg-status")
    assert not verdict.known_to_work and "install libedgetpu1-std from Coral's apt repository" in verdict.line
