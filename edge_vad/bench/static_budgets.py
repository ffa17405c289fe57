"""Static budgets: parameters, FLOPs, model sizes and EdgeTPU op coverage of a bundle against a target profile.

Nothing runs here; the numbers come from the bundle's manifest, which the exporter counted from the exported
graphs (edge_vad_export.budgets). Where the `onnx` package is installed the ONNX artifacts are counted again
with the same rule and any difference is reported, so the figures do not rest on the manifest alone.

Each check is {limit, value, pass, compare, unit, what}; `pass` is None when the value cannot be known
(e.g. no int8 artifact for an Edge TPU target), never a guess.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_vad.bench.profiles import TargetProfile
from edge_vad.bundle.manifest import Budgets, Manifest

log = logging.getLogger("edge_vad.bench")

COUNTING_RULE = (
    "Counted from the exported ONNX graphs after ONNX shape inference (edge_vad_export.budgets): MACs of Conv "
    "(output elements x input channels/group x kernel elements), ConvTranspose (input elements x output "
    "channels/group x kernel elements), Gemm (M x N x K) and MatMul (output elements x K); FLOPs = 2 x MACs; "
    "elementwise and normalisation ops are not counted (thop/fvcore convention); parameters = elements of the "
    "floating-point initializers and Constant tensors, each named tensor once; a BatchNormalization counts as the "
    "convolution bias it folds into (its shift counts, its scale, mean and variance do not). An int8 TFLite model "
    "is counted on the fp32 ONNX of the same network. 'Per forward pass' = one frame through the stage's graphs "
    "(coarse: backbone + QACM; fine: the fine graphs of the bundle)."
)
NO_INT8 = "no int8 artifact in bundle"


def check(limit: Optional[float], value: Optional[float], unit: str, what: str, compare: str = "<=",
          note: str = "") -> Dict[str, Any]:
    """One budget check; pass None when either side is unknown."""
    passed: Optional[bool] = None
    if limit is not None and value is not None:
        passed = bool(value <= limit) if compare == "<=" else bool(value >= limit)
    out = {"limit": limit, "value": value, "pass": passed, "compare": compare, "unit": unit, "what": what}
    if note:
        out["note"] = note
    return out


def _stage_totals(manifest: Manifest, key: str, stages: List[str]) -> Optional[Budgets]:
    """The manifest's per-frame total for a pipeline stage, or the sum of its ONNX artifacts' budgets."""
    if key in manifest.pipeline_budgets:
        return manifest.pipeline_budgets[key]
    parts = [a.budgets for a in manifest.artifacts.values()
             if a.stage in stages and a.format == "onnx" and a.budgets is not None]
    if not parts:
        return None
    macs = sum(p.macs for p in parts)
    return Budgets(params=sum(p.params for p in parts), macs=macs, flops=2 * macs, bytes=sum(p.bytes for p in parts),
                   counted_from=" + ".join(p.counted_from for p in parts),
                   uncounted_ops=[op for p in parts for op in p.uncounted_ops])


def recount(bundle_dir: Path, manifest: Manifest) -> Dict[str, Any]:
    """Count every ONNX artifact again (needs `onnx` and the export package); differences are listed."""
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("edge_vad_export") is None:
        return {"done": False, "why": "onnx / edge_vad_export not installed here: figures are the manifest's"}
    from edge_vad_export.budgets import count_onnx  # the export extra: imported only where installed

    counts, mismatches = {}, []
    for name, art in manifest.artifacts.items():
        if art.format != "onnx":
            continue
        c = count_onnx(bundle_dir / art.file)
        counts[name] = {"params": c.params, "flops": c.flops}
        if art.budgets is not None and (c.params, c.flops) != (art.budgets.params, art.budgets.flops):
            mismatches.append(f"{name}: manifest {art.budgets.params} params / {art.budgets.flops} FLOPs, "
                              f"recounted {c.params} / {c.flops}")
    return {"done": True, "counts": counts, "mismatches": mismatches}


def _edgetpu_coverage(lint: Optional[Dict[str, Any]]) -> Optional[float]:
    if not lint or not lint.get("ops"):
        return None
    ops = lint["ops"]
    return sum(1 for op in ops if op.get("status") == "ok") / len(ops)


def static_budgets(manifest: Manifest, profile: TargetProfile, fine_reference: Optional[Dict[str, Any]] = None
                   ) -> Dict[str, Dict[str, Any]]:
    """Budget checks of the bundle (and of the paper-faithful fine stage, `fine_reference`, when measured)."""
    b = profile.budgets
    checks: Dict[str, Dict[str, Any]] = {}
    if b.max_params is not None or b.max_flops is not None:
        for key, stages, label in (("coarse_per_frame", ["coarse_backbone", "coarse_head"], "coarse stage per frame"),
                                   ("fine_per_frame", ["fine_image", "fine_describer", "fine_head"],
                                    "fine stage per frame (bundle)")):
            totals = _stage_totals(manifest, key, stages)
            if totals is None:
                continue
            note = f"counted from {totals.counted_from}"
            if totals.uncounted_ops:
                note += f"; ops without a counting rule: {', '.join(totals.uncounted_ops[:5])}"
            if b.max_params is not None:
                checks[f"{key}_params"] = check(b.max_params, totals.params, "parameters", label, note=note)
            if b.max_flops is not None:
                checks[f"{key}_flops"] = check(b.max_flops, totals.flops, "FLOPs", label, note=note)
        if fine_reference is not None and fine_reference.get("params") is not None:
            label = f"fine stage with the {fine_reference.get('encoder', 'clip-vit-b16')} tower"
            note = (f"PyTorch architecture, weights: {fine_reference.get('weights', 'random')}; per "
                    f"{fine_reference.get('counted_per', 'forward pass')}")
            if b.max_params is not None:
                checks["fine_clip_vit_b16_params"] = check(b.max_params, fine_reference["params"], "parameters", label,
                                                           note=note)
            if b.max_flops is not None and fine_reference.get("gflops") is not None:
                checks["fine_clip_vit_b16_flops"] = check(b.max_flops, float(fine_reference["gflops"]) * 1e9, "FLOPs",
                                                          label, note=note)
            if b.max_flops is not None and fine_reference.get("gflops_per_frame") is not None:
                checks["fine_clip_vit_b16_flops_per_frame"] = check(
                    b.max_flops, float(fine_reference["gflops_per_frame"]) * 1e9, "FLOPs", label + ", one frame",
                    note=f"PyTorch architecture, weights: {fine_reference.get('weights', 'random')}; per frame")
    if b.max_model_bytes is not None or b.all_ops_on_tpu:
        tflite = {n: a for n, a in manifest.artifacts.items() if a.format == "tflite"}
        if not tflite:
            if b.max_model_bytes is not None:
                checks["int8_model_bytes"] = check(b.max_model_bytes, None, "bytes", "int8 TFLite model file", note=NO_INT8)
            if b.all_ops_on_tpu:
                checks["edgetpu_ops"] = check(1.0, None, "fraction of ops", "ops the Edge TPU runs", ">=", note=NO_INT8)
        for name, art in tflite.items():
            if b.max_model_bytes is not None:
                checks[f"model_bytes:{name}"] = check(b.max_model_bytes, art.bytes, "bytes", f"{art.file} size")
            if b.all_ops_on_tpu and art.edgetpu_compile is not None:  # what the compiler did, not a prediction
                rec = art.edgetpu_compile
                cov = rec.operations_on_tpu / rec.operations_total if rec.operations_total else None
                note = (f"edgetpu_compiler {rec.compiler_version}: {rec.operations_on_tpu} of {rec.operations_total} "
                        f"ops mapped, {rec.subgraphs} subgraph(s)")
            elif b.all_ops_on_tpu:
                cov = _edgetpu_coverage(art.edgetpu_lint)
                note = ("the manifest has no EdgeTPU lint of it; re-export the bundle" if cov is None else
                        f"EdgeTPU lint (runtime >= {art.edgetpu_lint.get('target_runtime')}): "  # type: ignore[union-attr]
                        f"{'PASS' if art.edgetpu_lint.get('passed') else 'FAIL'}")  # type: ignore[union-attr]
            if b.all_ops_on_tpu:
                checks[f"edgetpu_ops:{name}"] = check(1.0, cov, "fraction of ops", f"ops of {art.file} on the Edge TPU",
                                                      ">=", note=note)
    return checks


def model_sizes(manifest: Manifest) -> Dict[str, Any]:
    """Bytes of every artifact (what a board stores and loads), by artifact, with the format and precision;
    `package_bytes`: weights an artifact loads from a pip package (manifest package_weights), counted in the total."""
    arts = {}
    for n, a in manifest.artifacts.items():
        extra = a.package_weights.bytes if a.package_weights is not None else 0
        arts[n] = {"file": a.file, "format": a.format, "precision": a.precision, "bytes": a.bytes,
                   "package_bytes": extra, "mb": round((a.bytes + extra) / 2**20, 3)}
    return {"artifacts": arts, "total_bytes": sum(a["bytes"] + a["package_bytes"] for a in arts.values())}
