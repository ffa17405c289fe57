"""Write a model bundle atomically: every artifact goes into a hidden temporary folder next to `out`, the
manifest is validated against the runtime's schema and written last, then the folder is renamed into place.
A failed export (or Edge TPU compile) leaves no half-written bundle (and, with --force, the old bundle stays
until the new one is complete).

Runtime side (no torch): `edge-vad export` and `edge-vad models compile-edgetpu` both write bundles with it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

from edge_vad.bundle.manifest import MANIFEST_NAME, Manifest, parse_manifest
from edge_vad.bundle.verify import sha256_file
from edge_vad.errors import EdgeVadError


def check_out_dir(out: Path, force: bool) -> None:
    """--out must be a new or empty folder, or --force must be given."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgeVadError(f"--out {out} is a file; pass a folder path for the bundle")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise EdgeVadError(f"--out {out} exists and is not empty; pass --force to replace it, or choose another folder")


class BundleWriter:
    """Collects artifacts in a temporary folder; `finish(manifest fields)` validates and moves it to `out`.

    Use as a context manager: leaving the block with an exception removes the temporary folder.
    """

    def __init__(self, out: Union[Path, str], force: bool = False):
        self.out = Path(out).absolute()
        check_out_dir(self.out, force)
        self.force = force
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the bundle gets an ordinary folder's mode
        self.artifacts: Dict[str, Dict[str, Any]] = {}
        self._done = False

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None or not self._done:
            self.abort()

    def path(self, file: str) -> Path:
        """Where to write artifact file `file` now (inside the temporary folder)."""
        if "/" in file or file in ("", ".", "..", MANIFEST_NAME):
            raise EdgeVadError(f"artifact file must be a plain file name, got {file!r}")
        return self.tmp / file

    def add(self, name: str, file: str, stage: str, fmt: str, precision: str, **fields: Any) -> Dict[str, Any]:
        """Record an artifact already written at path(file): sha256 and size come from the file itself."""
        path = self.path(file)
        if not path.is_file():
            raise EdgeVadError(f"artifact {name}: {file} was not written")
        if name in self.artifacts:
            raise EdgeVadError(f"artifact {name} is added twice")
        entry = {"file": file, "sha256": sha256_file(path), "bytes": path.stat().st_size, "stage": stage,
                 "format": fmt, "precision": precision, **fields}
        self.artifacts[name] = entry
        return entry

    def keep(self, name: str, source_dir: Path, entry: Dict[str, Any]) -> None:
        """Carry artifact `name` over unchanged from another (verified) bundle: copy its file, keep its record."""
        if name in self.artifacts:
            raise EdgeVadError(f"artifact {name} is added twice")
        shutil.copy2(Path(source_dir) / entry["file"], self.path(entry["file"]))
        self.artifacts[name] = dict(entry)

    def finish(self, fields: Dict[str, Any]) -> Manifest:
        """Validate the manifest (runtime schema), write it, and move the bundle into place."""
        data = {**fields, "artifacts": self.artifacts}
        manifest = parse_manifest(data, f"bundle {self.out} (being written): {MANIFEST_NAME}")
        (self.tmp / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        self._swap_into_place()
        self._done = True
        return manifest

    def _swap_into_place(self) -> None:
        old: Optional[Path] = None
        if self.out.exists():
            if self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()
            else:
                check_out_dir(self.out, self.force)  # re-check: something may have appeared meanwhile
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".old", dir=self.out.parent))
                os.rmdir(old)
                os.rename(self.out, old)
        try:
            os.rename(self.tmp, self.out)
        except OSError:
            if old is not None:
                os.rename(old, self.out)  # put the previous bundle back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
