"""Bundle manifest schema, loading and verification on the runtime side (no torch, no onnx): hand-made
bundles with small files, every failure one line naming the file or key."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from edge_vad.bundle import MANIFEST_NAME, default_bundle_dir, load_manifest, parse_manifest, verify_bundle
from edge_vad.bundle.manifest import resolve_bundle_dir
from edge_vad.errors import EdgeVadError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(files: dict[str, bytes]) -> dict:
    arts = {}
    for name, data in files.items():
        arts[name] = {"file": f"{name}.onnx", "sha256": _sha(data), "bytes": len(data), "stage": "coarse_head",
                      "format": "onnx", "precision": "fp32",
                      "inputs": [{"name": "features", "shape": [1, 15, 128], "dtype": "float32", "layout": "NTC"}],
                      "outputs": [{"name": "logit", "shape": [1], "dtype": "float32"}],
                      "window": 15,
                      "parity": {"logit_vs_torch": {"metric": "max_rel_diff", "value": 3e-7, "tolerance": 1e-4,
                                                    "compare": "<=", "pass": True}}}
    return {
        "format_version": "edge-vad-bundle/1", "created_at": "2026-01-01T00:00:00+00:00",
        "tools": {"edge-vad": "0.1.0"}, "source_checkpoints": {"coarse.pt": "ab" * 32},
        "targets": {"onnx": {"backends": ["onnxruntime"], "artifacts": list(files)}},
        "preprocessing": {"size": 224, "mean": [0.498] * 3, "std": [0.502] * 3, "pixel_format": "RGB",
                          "resize": "whole frame, cv2.INTER_AREA, no crop", "interpolation": "area", "layout": "NCHW"},
        "snippet_frames": 16, "classes": [],
        "coarse": {"backbone": "efficientnet-lite0", "feature_dim": 128, "trunk_dim": 1280, "heatmap_size": 14,
                   "window": 15},
        "artifacts": arts,
    }


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    files = {"qacm": b"\x08\x07fake-onnx-bytes" * 10, "other": b"second artifact"}
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name, data in files.items():
        (folder / f"{name}.onnx").write_bytes(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(_manifest(files)))
    return folder


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_verify_ok_and_lookups(bundle: Path) -> None:
    report = verify_bundle(bundle)
    assert [f.artifact for f in report.files] == ["qacm", "other"]
    assert report.files[0].sha256 == _sha((bundle / "qacm.onnx").read_bytes())
    assert report.manifest.find("coarse_head", "onnx") == ["qacm", "other"]
    assert report.manifest.artifacts["qacm"].parity["logit_vs_torch"].passed
    assert "OK" in report.summary() and report.unlisted == []
    # A round trip through the model keeps every value (aliases included: "pass").
    again = parse_manifest(json.loads(report.manifest.to_json()), "x")
    assert again == report.manifest


def test_one_flipped_byte_names_file_and_both_hashes(bundle: Path) -> None:
    path = bundle / "qacm.onnx"
    data = bytearray(path.read_bytes())
    expected = _sha(bytes(data))
    data[5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(EdgeVadError) as exc:
        verify_bundle(bundle)
    msg = _one_line(exc)
    assert "qacm.onnx sha256 mismatch" in msg and str(bundle) in msg
    assert expected[:12] in msg and _sha(bytes(data))[:12] in msg
    assert "re-export or restore the file" in msg


def test_size_mismatch_missing_file_and_unlisted_file(bundle: Path) -> None:
    (bundle / "notes.txt").write_text("not part of the bundle")
    assert verify_bundle(bundle).unlisted == ["notes.txt"]
    with open(bundle / "other.onnx", "ab") as fh:
        fh.write(b"!")
    with pytest.raises(EdgeVadError, match=r"other\.onnx size mismatch \(expected 15 bytes, found 16\)"):
        verify_bundle(bundle)
    (bundle / "other.onnx").unlink()
    with pytest.raises(EdgeVadError, match=r"file other\.onnx \(artifact other\) is missing"):
        verify_bundle(bundle)


def test_unknown_and_missing_keys_are_named(bundle: Path) -> None:
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    bad = copy.deepcopy(data)
    bad["artifacts"]["qacm"]["colour"] = "blue"
    (bundle / MANIFEST_NAME).write_text(json.dumps(bad))
    with pytest.raises(EdgeVadError) as exc:
        load_manifest(bundle)
    assert "unknown key artifacts.qacm.colour" in _one_line(exc)
    bad = copy.deepcopy(data)
    del bad["preprocessing"]["mean"]
    (bundle / MANIFEST_NAME).write_text(json.dumps(bad))
    with pytest.raises(EdgeVadError, match="missing key preprocessing.mean"):
        load_manifest(bundle)


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(format_version="edge-vad-bundle/9"), "format_version 'edge-vad-bundle/9' is not supported"),
    (lambda d: d["artifacts"]["qacm"].update(file="../escape.onnx"), "plain file name"),
    (lambda d: d["artifacts"]["qacm"].update(stage="gpu_magic"), "artifacts.qacm.stage"),
    (lambda d: d["targets"]["onnx"]["artifacts"].append("ghost"), "ghost"),
    # a check whose recorded pass contradicts its own numbers is not trusted
    (lambda d: d["artifacts"]["qacm"]["parity"]["logit_vs_torch"].update(value=0.5), "contradicts"),
])
def test_invalid_manifests_are_one_line_errors(bundle: Path, mutate, needle: str) -> None:
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    mutate(data)
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(EdgeVadError) as exc:
        verify_bundle(bundle)
    assert needle in _one_line(exc)


def test_failed_parity_check_fails_verification(bundle: Path) -> None:
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    data["artifacts"]["qacm"]["parity"]["logit_vs_torch"].update(value=0.5, **{"pass": False})
    (bundle / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(EdgeVadError, match=r"artifact qacm failed its export parity checks \['logit_vs_torch'\]"):
        verify_bundle(bundle)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(EdgeVadError, match="no manifest.json"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(EdgeVadError, match="not valid JSON"):
        load_manifest(tmp_path)
    with pytest.raises(EdgeVadError, match="not a folder"):
        load_manifest(tmp_path / "absent")


def test_default_bundle_dir_is_package_data_of_the_runtime() -> None:
    path = default_bundle_dir()
    assert path == REPO_ROOT / "edge_vad" / "bundles" / "default"  # the checkout (editable install)
    if (path / MANIFEST_NAME).is_file():  # once the lead has committed the default bundle
        assert resolve_bundle_dir("default") == path
        assert verify_bundle(path).manifest.artifacts
    else:
        with pytest.raises(EdgeVadError, match="default bundle is missing"):
            resolve_bundle_dir(None)
    assert resolve_bundle_dir("some/folder") == Path("some/folder")
