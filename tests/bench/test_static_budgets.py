"""Static budgets of a bundle against a target: values from the manifest, EdgeTPU coverage from its lint."""

from __future__ import annotations

import json

import pytest

from edge_vad.bench.profiles import load_profile
from edge_vad.bench.static_budgets import NO_INT8, check, model_sizes, recount, static_budgets
from edge_vad.bundle import default_bundle_dir, load_manifest, parse_manifest


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(default_bundle_dir())


def test_check_semantics():
    assert check(10, 9, "u", "w")["pass"] is True
    assert check(10, 11, "u", "w")["pass"] is False
    assert check(1.0, 0.5, "u", "w", ">=")["pass"] is False
    assert check(1.0, None, "u", "w")["pass"] is None


def test_jetson_budgets_come_from_the_manifest(manifest):
    checks = static_budgets(manifest, load_profile("jetson-nano"))
    coarse = manifest.pipeline_budgets["coarse_per_frame"]
    assert checks["coarse_per_frame_params"]["value"] == coarse.params
    assert checks["coarse_per_frame_flops"]["value"] == coarse.flops == 2 * coarse.macs
    assert checks["coarse_per_frame_flops"]["limit"] == 100e9
    for c in checks.values():
        assert set(c) >= {"limit", "value", "pass"}
        assert c["pass"] is True  # the shipped bundle is small (5.3 M params, 0.84 GFLOPs per frame)
    assert "int8_model_bytes" not in checks  # Jetson has no file-size budget


def _without_tflite(manifest):
    """The manifest with its int8 artifacts (and the target that lists them) taken out."""
    data = json.loads(manifest.to_json())
    data["artifacts"] = {k: a for k, a in data["artifacts"].items() if a["format"] != "tflite"}
    data["targets"] = {k: t for k, t in data["targets"].items() if set(t["artifacts"]) <= set(data["artifacts"])}
    return parse_manifest(data, "test")


def test_coral_without_int8_artifact_says_so(manifest):
    checks = static_budgets(_without_tflite(manifest), load_profile("coral-usb"))
    assert checks["int8_model_bytes"]["pass"] is None and checks["int8_model_bytes"]["note"] == NO_INT8
    assert checks["edgetpu_ops"]["pass"] is None and checks["edgetpu_ops"]["note"] == NO_INT8


def _with_tflite(manifest, lint):
    data = json.loads(manifest.to_json())
    art = dict(data["artifacts"]["qacm"])
    art.update(file="qacm_int8.tflite", format="tflite", precision="int8", edgetpu_lint=lint, bytes=40 * 2**20)
    data["artifacts"]["qacm_int8"] = art
    return parse_manifest(data, "test")


def test_coral_coverage_and_size_from_lint(manifest):
    lint = {"passed": False, "target_runtime": 14,
            "ops": [{"index": 0, "opcode": "CONV_2D", "status": "ok", "reasons": []},
                    {"index": 1, "opcode": "CONV_2D", "status": "ok", "reasons": []},
                    {"index": 2, "opcode": "GATHER", "status": "unsupported_op", "reasons": ["not supported"]},
                    {"index": 3, "opcode": "ADD", "status": "ok", "reasons": []}]}
    checks = static_budgets(_with_tflite(manifest, lint), load_profile("coral-devboard"))
    cov = checks["edgetpu_ops:qacm_int8"]
    assert cov["value"] == pytest.approx(0.75) and cov["pass"] is False and "FAIL" in cov["note"]
    size = checks["model_bytes:qacm_int8"]
    assert size["value"] == 40 * 2**20 and size["pass"] is False  # 40 MB > 32 MB
    assert "int8_model_bytes" not in checks


def test_coral_lint_missing_is_unknown_not_pass(manifest):
    checks = static_budgets(_with_tflite(manifest, None), load_profile("coral-usb"))
    assert checks["edgetpu_ops:qacm_int8"]["pass"] is None


def test_coral_coverage_of_a_compiled_model_is_the_compilers_count(manifest):
    data = json.loads(manifest.to_json())
    art = dict(data["artifacts"]["qacm_int8"], file="qacm_int8_edgetpu.tflite", edgetpu_lint=None, edgetpu_compile={
        "source_artifact": "qacm_int8", "compiler_version": "16.0.384591198", "subgraphs": 1, "operations_total": 5,
        "operations_on_tpu": 4, "operations_on_cpu": 1, "on_chip_bytes": 80_000, "off_chip_bytes": 0})
    data["artifacts"]["qacm_int8_edgetpu"] = art
    checks = static_budgets(parse_manifest(data, "test"), load_profile("coral-usb"))
    cov = checks["edgetpu_ops:qacm_int8_edgetpu"]
    assert cov["value"] == pytest.approx(0.8) and cov["pass"] is False and "4 of 5 ops mapped" in cov["note"]


def test_fine_reference_is_held_to_the_budget(manifest):
    ref = {"params": 120_000_000, "gflops": 22.17, "weights": "random", "encoder": "clip-vit-b16"}
    checks = static_budgets(manifest, load_profile("jetson-nano"), ref)
    assert checks["fine_clip_vit_b16_params"]["pass"] is False
    assert checks["fine_clip_vit_b16_flops"]["value"] == pytest.approx(22.17e9)
    assert checks["fine_clip_vit_b16_flops"]["pass"] is True
    assert "random" in checks["fine_clip_vit_b16_flops"]["note"]


def test_model_sizes_sum(manifest):
    sizes = model_sizes(manifest)
    package = sum(a.package_weights.bytes for a in manifest.artifacts.values() if a.package_weights is not None)
    assert sizes["total_bytes"] == sum(a.bytes for a in manifest.artifacts.values()) + package
    bb = sizes["artifacts"]["coarse_backbone"]
    assert bb["format"] == "onnx" and bb["package_bytes"] == (manifest.artifacts["coarse_backbone"].package_weights.bytes
                                                             if manifest.artifacts["coarse_backbone"].package_weights else 0)


def test_recount_agrees_with_manifest(manifest):
    pytest.importorskip("onnx", reason="needs the export extra (onnx)")
    out = recount(default_bundle_dir(), manifest)
    assert out["done"] and out["mismatches"] == []
    assert out["counts"]["qacm"]["params"] == manifest.artifacts["qacm"].budgets.params
