"""Model bundles: a folder with manifest.json and the artifacts it lists (DESIGN.md convention 2).

Runtime side only (no torch): the schema, loading, verification and the shipped default bundle's location.
Bundles are written atomically by edge_vad.bundle.writer (the exporter and the Edge TPU compile step).
"""

from __future__ import annotations

from edge_vad.bundle.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Artifact,
    Budgets,
    Manifest,
    ParityCheck,
    Preprocessing,
    TensorInfo,
    default_bundle_dir,
    load_manifest,
    parse_manifest,
    resolve_bundle_dir,
)
from edge_vad.bundle.verify import VerifyReport, sha256_file, verify_bundle

__all__ = [
    "FORMAT_VERSION", "MANIFEST_NAME", "Artifact", "Budgets", "Manifest", "ParityCheck", "Preprocessing", "TensorInfo",
    "VerifyReport", "default_bundle_dir", "load_manifest", "parse_manifest", "resolve_bundle_dir", "sha256_file",
    "verify_bundle",
]
