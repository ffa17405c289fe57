"""End to end on the benchmark stream, and the soak: the runtime in a child process (see edge_vad.bench.child).

end_to_end: fps of the whole cascade as deployed (fine stage in its worker thread, events, clips and snapshots
written), and `fps_vs_coarse`: that fps over the coarse stage's own fps on the same frames with the same
threads (another child runs only CoarseStage.step on every frame, decoding excluded), i.e. how much of the
coarse stage's speed the pipeline keeps. The two alternate, coarse first and last (C P C P C P C:
END_TO_END_ROUNDS pipeline runs), and each side's figure is the median of its runs: on a shared 2-core VM one
run of either varied by +-15 % from minute to minute, so one pair could put the ratio anywhere from 0.8 to
1.05; alternating moves both sides alike with the machine's load, and the median drops the odd run.
Also the decode-only fps of the same video (kept for reference: a decoder runs at thousands of fps, so
pipeline/decode says little), gate duty cycle, dropped frames (fine snippets dropped by the full queue +
frames a live source replaced + frames a damaged file never delivered), and the run's peak RSS (the child's
VmHWM, see edge_vad.bench.subproc).

soak: the same run on the video played in a loop for `minutes` of MEDIA time (frames = minutes x 60 x fps),
with VmRSS sampled along the way; RSS at the start is the sample at the end of the first pass over the video
(every code path has run once, the allocator is warm), RSS at the end is the last sample.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_vad.bench.stream import decode_fps
from edge_vad.bench.subproc import child_args, child_timeout, run_child

SOAK_RSS_SAMPLES = 40  # VmRSS samples over a soak
END_TO_END_ROUNDS = 3  # pipeline runs, each between two coarse-only runs (see module doc)


def end_to_end(source: Path, bundle: Optional[Path], backend: Optional[str] = None,
               rounds: int = END_TO_END_ROUNDS) -> Dict[str, Any]:
    decode = decode_fps(source)
    timeout = child_timeout(decode["frames"])

    def coarse_only() -> Optional[float]:
        run = run_child(child_args(source, bundle, backend) + ["--coarse-only"], timeout, "coarse-only")
        return run.result.get("fps")

    def pipeline() -> Any:
        with tempfile.TemporaryDirectory(prefix="edge-vad-bench-events-") as events:
            return run_child(child_args(source, bundle, backend) + ["--events-dir", events, "--rss-every", "50"],
                             timeout, "end-to-end")

    coarse_runs, runs = [coarse_only()], []
    for _ in range(max(1, rounds)):
        runs.append(pipeline())
        coarse_runs.append(coarse_only())
    pipe_fps = [r.result.get("fps") for r in runs]
    fps = _median(pipe_fps)
    coarse_fps = _median(coarse_runs)
    run = runs[pipe_fps.index(fps)] if fps in pipe_fps else runs[0]  # the median run (rounds is odd)
    r = run.result
    dropped = {"fine_queue_full": r["fine_dropped_frames"], "source_replaced": r["source_dropped"],
               "never_decoded": r["frames_missing"]}
    return {
        "fps": fps,
        "fps_cpu": r.get("fps_cpu"),
        "decode_fps": decode["fps"],
        "coarse_fps": coarse_fps,
        "coarse_fps_runs": coarse_runs,
        "fps_runs": pipe_fps,
        "fps_vs_coarse": round(fps / coarse_fps, 4) if fps and coarse_fps else None,
        "fps_vs_decode": round(fps / decode["fps"], 4) if fps and decode["fps"] else None,
        "gate_duty": r["gate_duty"],
        "dropped": int(sum(dropped.values())),
        "dropped_detail": dropped,
        "peak_rss_mb": max((x.peak_rss_mb for x in runs if x.peak_rss_mb is not None), default=None),
        "peak_rss_source": run.peak_rss_source,
        "frames": r["frames_read"],
        "seconds": r["seconds"],
        "load_s": r["load_s"],
        "events": r["events"],
        "fine_frames": r["fine_frames"],
        "decode": decode,
        "backends": r["backends"],
        "threads": r.get("threads"),
        "how": ("child processes running the runtime as `edge-vad run` assembles it (default config, so the "
                "runtime's default intra-op threads; HTTP off; "
                "fine worker thread; events, clips, snapshots to a temp folder); fps = frames read / pipeline "
                "seconds (model loading excluded, in load_s), the median of the pipeline runs (fps_runs; the "
                "other figures are the median run's); peak RSS of a child process alone, the largest of the runs; "
                "coarse_fps = frames / seconds inside CoarseStage.step over the same frames in other children "
                "with the same backends and threads, run before, between and after the pipeline runs (median of "
                "coarse_fps_runs); fps_vs_coarse = fps / coarse_fps"),
    }


def _median(values: List[Optional[float]]) -> Optional[float]:
    known = [v for v in values if v]
    return round(statistics.median(known), 3) if known else None


def soak(source: Path, bundle: Optional[Path], minutes: float, media_fps: Optional[float], video_frames: int,
         backend: Optional[str] = None) -> Dict[str, Any]:
    fps = media_fps or 25.0
    frames = max(1, math.ceil(minutes * 60.0 * fps))
    every = max(1, frames // SOAK_RSS_SAMPLES)
    with tempfile.TemporaryDirectory(prefix="edge-vad-bench-soak-") as events:
        run = run_child(child_args(source, bundle, backend) + ["--loop", "--max-frames", str(frames), "--rss-every",
                                                                 str(every), "--events-dir", events],
                        child_timeout(frames), "soak")
    samples = [s for s in run.result.get("rss_samples", []) if s[1] is not None]
    warm = [s for s in samples if s[0] >= video_frames] or samples
    start = warm[0] if warm else None
    end = samples[-1] if samples else None
    return {
        "minutes_of_video": minutes, "frames": run.result.get("frames_read"), "wall_s": run.wall_s,
        "rss_start_mb": start[1] if start else None, "rss_start_at_frame": start[0] if start else None,
        "rss_end_mb": end[1] if end else None,
        "rss_growth_mb": round(end[1] - start[1], 2) if start and end else None,
        "peak_rss_mb": run.peak_rss_mb, "samples": samples,
        "how": "the end-to-end run on the video looped; start = first VmRSS sample after one pass over the video",
    }
