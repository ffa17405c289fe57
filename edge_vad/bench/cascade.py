"""The cascade against always-on, on the same labelled stream, same machine, same bundle.

Both systems run the runtime's Pipeline in a child process with the fine stage IN LINE (nothing dropped, so
throughput counts all the work each system does):
- cascade:   the deployed gate (default config): the fine stage runs only while the gate is open (+ pre-roll);
- always-on: the gate forced open on every frame, so the fine stage runs on every snippet, as VadCLIP-style
             systems do.
speedup = ratio of frames per CPU-second of the two pipeline runs (time.process_time of the child, every thread),
with one inference thread each: what each system costs in work, which other jobs on a shared machine do not
move much; `speedup_wall` is the ratio of frames per wall-clock second (the same on a quiet machine; here the
two runs happen minutes apart under whatever else runs, so it wanders: 1.02x and 1.41x on two runs of ours).

bound = (C_coarse + C_fine) / (C_coarse + duty x C_fine): the speedup gating can give when nothing but the two
stages costs anything, from the stage costs MEASURED in the same two runs (CPU time of each stage in the
thread that ran it, edge_vad.bench.child.CountingMetrics): C_coarse = preprocess + backbone + QACM per scored
frame (mean of both runs), C_fine = fine encoder + fine head per scored frame of the always-on run, duty = the
cascade's fine frames / the always-on run's. speedup / bound says how much of that the whole runtime keeps
(decoding, the gate, events and Python cost both systems alike and pull it below 1).

Frame AUC needs one score per frame from each system; both use the SAME rule (SCORE_DEFINITION):
    score_t = 1 + (1 - p_normal,t)   where the fine stage produced class probabilities for frame t
    score_t = s_t (coarse score)     where it did not
so frames the fine stage examined rank above frames only the coarse stage saw, each group ordered by its own
stage's anomaly score. For always-on every frame is fine-scored, so its AUC is that of 1 - p_normal alone.
The coarse score's own AUC is reported beside them for reference.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from edge_vad.bench.stream import MAX_ANOMALOUS_FRACTION, Labels, dilute, repeats_needed
from edge_vad.bench.subproc import child_args, child_timeout, run_child

CASCADE_THREADS = 1  # one inference thread per system, so CPU time measures work, not spinning thread pools

SCORE_DEFINITION = (
    "Per frame t, for both systems: score_t = 1 + (1 - p_normal_t) where the fine stage produced class "
    "probabilities for frame t (p_normal_t = its softmax probability of the normal class), else score_t = s_t, "
    "the coarse score sigmoid(QACM logit). Fine-scored frames thus rank above coarse-only frames. Frame AUC = "
    "roc_auc_score of the frame labels (stream .json) against score_t."
)


def system_scores(coarse: np.ndarray, probs: np.ndarray, normal_class: int) -> np.ndarray:
    """score_t by SCORE_DEFINITION; probs [T, C] with NaN rows where the fine stage did not score the frame."""
    scores = np.asarray(coarse, dtype=np.float64).copy()
    if probs.size and normal_class >= 0:
        seen = ~np.isnan(probs).any(axis=1)
        scores[seen] = 1.0 + (1.0 - probs[seen, normal_class].astype(np.float64))
    return scores


def frame_auc(labels: np.ndarray, frames: np.ndarray, scores: np.ndarray) -> Optional[float]:
    """AUC over the frames that have a label (frame index < len(labels)); None with one class only."""
    from edge_vad.eval.metrics import frame_metrics  # scikit-learn: ~2 s to import, only needed here

    keep = frames < len(labels)
    y = labels[frames[keep]]
    return frame_metrics({"stream": y}, {"stream": scores[keep]})["auc"]


def _run(video: Path, bundle: Optional[Path], backend: Optional[str], frames: int, always_on: bool,
         tmp: Path) -> Dict[str, Any]:
    npz = tmp / ("always_on.npz" if always_on else "cascade.npz")
    args = child_args(video, bundle, backend) + ["--fine-inline", "--scores-out", str(npz), "--stage-cpu",
                                                  "--threads", str(CASCADE_THREADS)]
    if always_on:
        args.append("--always-on")
    run = run_child(args, child_timeout(frames), "always-on" if always_on else "cascade")
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    r = run.result
    return {"fps": r["fps"], "fps_cpu": r["fps_cpu"], "frames": r["frames_read"], "seconds": r["seconds"],
            "cpu_seconds": r["cpu_seconds"], "gate_duty": r["gate_duty"], "frames_scored": r["frames_scored"],
            "fine_frames": r["fine_frames"], "stage_cpu_s": r.get("stage_cpu_s", {}), "peak_rss_mb": run.peak_rss_mb,
            "arrays": arrays}


COARSE_STAGES = ("preprocess", "coarse", "qacm")
FINE_STAGES = ("fine_encoder", "fine_head")


def _per_frame_ms(run: Dict[str, Any], stages: tuple) -> Optional[float]:
    if not run.get("frames_scored") or not run.get("stage_cpu_s"):
        return None
    return 1000.0 * sum(run["stage_cpu_s"].get(s, 0.0) for s in stages) / run["frames_scored"]


def gating_bound(c_coarse: float, c_fine: float, duty: float) -> float:
    """(C_coarse + C_fine) / (C_coarse + duty x C_fine): the speedup of gating when only the stages cost."""
    return (c_coarse + c_fine) / (c_coarse + duty * c_fine)


def bound_figures(cascade: Dict[str, Any], always: Dict[str, Any], speedup: Optional[float]) -> Dict[str, Any]:
    """bound, its inputs and speedup / bound from the two runs' measured stage costs (module doc)."""
    coarse = [c for c in (_per_frame_ms(cascade, COARSE_STAGES), _per_frame_ms(always, COARSE_STAGES)) if c]
    fine = _per_frame_ms(always, FINE_STAGES)
    if not coarse or fine is None or not always.get("fine_frames"):
        return {"bound": None, "bound_note": "the runs recorded no stage costs"}
    c_coarse = sum(coarse) / len(coarse)
    duty = cascade["fine_frames"] / always["fine_frames"]
    bound = gating_bound(c_coarse, fine, duty)
    return {"bound": round(bound, 4), "speedup_over_bound": round(speedup / bound, 4) if speedup else None,
            "duty": round(duty, 4), "c_coarse_ms": round(c_coarse, 3), "c_fine_ms": round(fine, 3),
            "bound_definition": ("(C_coarse + C_fine) / (C_coarse + duty x C_fine); C = CPU ms per scored frame "
                                 "of the stages (coarse: preprocess + backbone + QACM, mean of both runs; fine: "
                                 "encoder + head, always-on run); duty = cascade fine frames / always-on fine "
                                 "frames")}


def cascade_vs_always_on(video: Path, labels: Optional[Labels], bundle: Optional[Path],
                         backend: Optional[str] = None, frames_hint: int = 0) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edge-vad-bench-cascade-") as tmp_name:
        tmp = Path(tmp_name)
        stream: Dict[str, Any] = {"source": str(video), "labels": str(labels.path) if labels else None}
        if labels is not None:
            stream["anomalous_fraction_source"] = round(labels.anomalous_fraction, 4)
            repeats = repeats_needed(labels)
            if repeats > 1:
                labels = dilute(video, labels, tmp / "diluted.mp4", repeats)
                video = tmp / "diluted.mp4"
                stream["built"] = (f"every normal segment of the source played {repeats} times in a row so that "
                                   f"<= {MAX_ANOMALOUS_FRACTION:.0%} of the frames are anomalous")
            stream["frames"] = int(labels.frames.size)
            stream["anomalous_fraction"] = round(labels.anomalous_fraction, 4)
        n = int(labels.frames.size) if labels is not None else frames_hint
        cascade = _run(video, bundle, backend, n, False, tmp)
        always = _run(video, bundle, backend, n, True, tmp)
    speedup = _ratio(cascade["fps_cpu"], always["fps_cpu"])
    out: Dict[str, Any] = {
        "speedup": speedup,
        **bound_figures(cascade, always, speedup),
        "speedup_wall": _ratio(cascade["fps"], always["fps"]),
        "auc_cascade": None, "auc_always_on": None, "auc_coarse_only": None,
        "score_definition": SCORE_DEFINITION,
        "stream": stream,
        "fine_stage": "in line (nothing dropped) in both systems",
        "threads": CASCADE_THREADS,
        "speedup_definition": "frames per CPU-second of the pipeline (process_time), cascade / always-on",
    }
    for name, run in (("cascade", cascade), ("always_on", always)):
        a = run.pop("arrays")
        run["fine_fraction"] = round(run["fine_frames"] / run["frames"], 4) if run["frames"] else None
        out[name] = run
        if labels is not None:
            scores = system_scores(a["coarse"], a["probs"], int(a["normal_class"]))
            out[f"auc_{name}"] = _round(frame_auc(labels.frames, a["frames"], scores))
            if name == "cascade":
                out["auc_coarse_only"] = _round(frame_auc(labels.frames, a["frames"], a["coarse"].astype(np.float64)))
    if labels is None:
        out["auc_note"] = f"no frame labels beside {video} (<stem>.json): AUC not computed"
    if always["gate_duty"] is not None and always["gate_duty"] < 1.0:
        out["always_on_note"] = f"the forced-open gate was open on {always['gate_duty']:.1%} of frames only"
    return out


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 4) if a and b else None


def _round(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(float(x), 4)

