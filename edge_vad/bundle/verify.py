"""Check a bundle before anything loads it: the manifest validates, every listed file exists with the
recorded size and sha256, every export-time parity check passed, and weights an artifact takes from a pip
package (manifest package_weights) are installed and lay out to the recorded sha256. Any problem is one
EdgeVadError line naming the file and, for a hash, the expected and the found value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from edge_vad.bundle.manifest import MANIFEST_NAME, Manifest, load_manifest, resolve_bundle_dir
from edge_vad.bundle.package_weights import laid_out_weights
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import sha256_file  # re-exported: edge_vad.bundle and the export toolchain import it from here

_HASH_SHOWN = 12  # hex digits of a sha256 shown in messages: enough to tell two files apart


@dataclass(frozen=True)
class FileCheck:
    artifact: str
    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class PackageCheck:
    artifact: str
    package: str
    version: str
    bytes: int


@dataclass(frozen=True)
class VerifyReport:
    """A bundle that passed: its manifest, the files checked, and files present but not listed."""

    bundle: Path
    manifest: Manifest
    files: List[FileCheck]
    unlisted: List[str] = field(default_factory=list)
    packages: List[PackageCheck] = field(default_factory=list)

    def summary(self) -> str:
        total = sum(f.bytes for f in self.files)
        extra = f"; {len(self.unlisted)} unlisted file(s) ignored: {', '.join(self.unlisted)}" if self.unlisted else ""
        pkgs = "".join(f"; {p.artifact} takes {p.bytes / 1e6:.1f} MB of weights from pip package {p.package} "
                       f"{p.version} (checked)" for p in self.packages)
        return (f"bundle {self.bundle}: OK ({len(self.files)} artifacts, {total / 1e6:.1f} MB, "
                f"made {self.manifest.created_at}){pkgs}{extra}")


def _short(digest: str) -> str:
    return digest[:_HASH_SHOWN] + "…"


def verify_bundle(bundle_dir: Path | str) -> VerifyReport:
    """Re-hash every artifact of `bundle_dir` ("default": the shipped bundle) against its manifest; raise
    EdgeVadError on the first problem."""
    bundle_dir = resolve_bundle_dir(bundle_dir)
    manifest = load_manifest(bundle_dir)
    checks: List[FileCheck] = []
    packages: List[PackageCheck] = []
    for name, art in manifest.artifacts.items():
        path = bundle_dir / art.file
        if not path.is_file():
            raise EdgeVadError(f"bundle {bundle_dir}: file {art.file} (artifact {name}) is missing; "
                               "re-export or restore the file")
        size = path.stat().st_size
        if size != art.bytes:
            raise EdgeVadError(f"bundle {bundle_dir}: file {art.file} size mismatch (expected {art.bytes} bytes, "
                               f"found {size}); re-export or restore the file")
        found = sha256_file(path)
        if found != art.sha256:
            raise EdgeVadError(f"bundle {bundle_dir}: file {art.file} sha256 mismatch (expected {_short(art.sha256)}, "
                               f"found {_short(found)}); re-export or restore the file")
        failed = [k for k, p in art.parity.items() if not p.passed]
        if failed:
            raise EdgeVadError(f"bundle {bundle_dir}: artifact {name} failed its export parity checks {failed}; "
                               "re-export the bundle")
        checks.append(FileCheck(name, art.file, size, found))
        pw = art.package_weights
        if pw is not None:
            laid_out_weights(pw)  # installed, the recorded file, and the recorded bytes: else one error line
            packages.append(PackageCheck(name, pw.package, pw.version, pw.bytes))
    listed = {a.file for a in manifest.artifacts.values()} | {MANIFEST_NAME}
    unlisted = sorted(p.name for p in bundle_dir.iterdir() if p.name not in listed)
    return VerifyReport(bundle_dir, manifest, checks, unlisted, packages)
