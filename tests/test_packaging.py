"""Packaging: every Python package folder is listed in pyproject.toml under its
project-specific import name (models/ -> edge_vad_models, export/ -> edge_vad_export)."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed():
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    package_dir = setuptools_cfg["package-dir"]
    listed = set(setuptools_cfg["packages"])
    found = set()
    for import_name, folder in package_dir.items():
        root = REPO_ROOT / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((import_name, *rel)))
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"


def test_no_generic_import_names():
    # A site-packages package called plain `models` or `export` would collide with other projects.
    names = {p.split(".")[0] for p in _pyproject()["tool"]["setuptools"]["packages"]}
    assert names <= {"edge_vad", "edge_vad_models", "edge_vad_export"}


def test_torch_extra_admits_the_pinned_cpu_build():
    from packaging.requirements import Requirement

    train = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"]["train"]]
    torch_req = next(r for r in train if r.name == "torch")
    assert torch_req.specifier.contains("2.13.0")
    runtime = [Requirement(r).name for r in _pyproject()["project"]["dependencies"]]
    assert "torch" not in runtime and "pycoral" not in runtime


def test_installed_wheel_runs_the_default_bundle_without_torch_or_checkout(tmp_path: Path) -> None:
    """Build the wheel, install it (no deps: this environment has them) into a bare folder, and from there, with
    torch blocked and the checkout off the path, verify the shipped bundle and run it on the sample stream."""
    import os
    import subprocess

    from edge_vad_test_support.no_torch import BLOCK_TORCH

    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "-q", "-w", str(wheels)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("edge_vad-*.whl"))
    import zipfile

    shipped = set(zipfile.ZipFile(wheel).namelist())
    page = {f"edge_vad/review/static/{name}" for name in ("index.html", "app.js", "style.css", "favicon.svg")}
    assert page <= shipped, f"the review page is missing from the wheel: {sorted(page - shipped)}"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    code = BLOCK_TORCH + (
        "import edge_vad\n"
        f"assert edge_vad.__file__.startswith({str(site)!r}), edge_vad.__file__\n"
        "from edge_vad.bundle import verify_bundle\n"
        "print(verify_bundle('default').summary())\n"
        "from edge_vad.cli import main\n"
        f"sys.argv = ['edge-vad', 'run', '--source', {str(REPO_ROOT / 'benchmarks' / 'data' / 'sample-stream.mp4')!r}, "
        f"'--report', {str(tmp_path / 'report')!r}, '--no-http']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "assert 'torch' not in sys.modules\n")
    env = {**os.environ, "PYTHONPATH": str(site), "EDGE_VAD_ONNX_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = " ".join((proc.stdout + proc.stderr).split())  # the run summary is on stderr; rich wraps long lines
    assert f"{site}/edge_vad/bundles/default: OK" in out
    assert "684 frames scored" in out and "event(s)" in out
    # the report holds every frame's score (events depend on the gate: the shipped one stays shut on this sample)
    assert len((tmp_path / "report" / "scores.csv").read_text().splitlines()) == 1 + 684
