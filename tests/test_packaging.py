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
