"""Per-frame record of a run, and `--report DIR`: scores.csv, events.jsonl and curve.png.

    log = ScoreLog()
    log.add(frame.index, frame.timestamp_s, score, gate_open, fine_class, smoothed)   # every SCORED frame
    log.add_probs(frame.index, probs)                                        # frames the fine stage ran on
    write_report(out_dir, log, events, title="front-door", gate=cfg.gate)

scores.csv columns, exactly: frame, time_s, coarse_score, gate_open (0/1), fine_class (the class the fine
stage reported for the current gate opening when the frame was processed; empty when none), smoothed_score
(the gate's moving average, what opens and closes it; empty where not given). events.jsonl: the run's event
records, one JSON object per line. curve.png: the raw coarse score (thin, light) and the smoothed score the
gate acts on (bold) over time, gate openings shaded, each opening labelled with its fine class. Each file is written to a temporary name, fsynced and
renamed, so a reader sees the old file or the whole new one.

Storage is compact (about 20 bytes per scored frame) because `--report` may follow a long file.
"""

from __future__ import annotations

import io
import json
from array import array
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from edge_vad.config import GateConfig
from edge_vad.runtime.snapshot import atomic_write_bytes

CSV_COLUMNS = ("frame", "time_s", "coarse_score", "gate_open", "fine_class", "smoothed_score")
SCORES_CSV, EVENTS_JSONL, CURVE_PNG = "scores.csv", "events.jsonl", "curve.png"
CURVE_SIZE_IN = (10.0, 3.6)  # figure size: wide enough for a few minutes of video at a glance
CURVE_DPI = 110


class ScoreLog:
    """Everything scored in one stream, in frame order (thread-confined: one pipeline writes it)."""

    def __init__(self) -> None:
        self.frames = array("q")
        self.times = array("d")
        self.scores = array("f")
        self.smoothed = array("f")  # NaN where the caller gave none
        self.gate = bytearray()
        self._class_ids = array("h")  # index into self.class_names, -1 for none
        self.class_names: List[str] = []
        self.probs: Dict[int, np.ndarray] = {}  # frame index -> class probabilities (fine stage ran on it)

    def __len__(self) -> int:
        return len(self.frames)

    def add(self, index: int, t: float, score: float, gate_open: bool, fine_class: Optional[str],
            smoothed: Optional[float] = None) -> None:
        self.frames.append(int(index))
        self.times.append(float(t))
        self.scores.append(float(score))
        self.smoothed.append(float("nan") if smoothed is None else float(smoothed))
        self.gate.append(1 if gate_open else 0)
        if fine_class:
            if fine_class not in self.class_names:
                self.class_names.append(fine_class)
            self._class_ids.append(self.class_names.index(fine_class))
        else:
            self._class_ids.append(-1)

    def add_probs(self, index: int, probs: np.ndarray) -> None:
        self.probs[int(index)] = np.asarray(probs, dtype=np.float32)

    def fine_class(self, i: int) -> str:
        cid = self._class_ids[i]
        return self.class_names[cid] if cid >= 0 else ""

    def score_array(self) -> np.ndarray:
        return np.frombuffer(self.scores, dtype=np.float32).astype(np.float64) if len(self.scores) else np.zeros(0)

    def smoothed_array(self) -> np.ndarray:
        return np.frombuffer(self.smoothed, dtype=np.float32).astype(np.float64) if len(self.smoothed) else np.zeros(0)

    def gate_array(self) -> np.ndarray:
        return np.frombuffer(bytes(self.gate), dtype=np.uint8).astype(bool)

    def openings(self) -> List[Tuple[int, int]]:
        """[start, end) row ranges where the gate was open."""
        g = self.gate_array().astype(np.int8)
        edges = np.diff(np.concatenate([[0], g, [0]]))
        return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def scores_csv(log: ScoreLog) -> str:
    lines = [",".join(CSV_COLUMNS)]
    for i in range(len(log)):
        cls = log.fine_class(i)
        if any(ch in cls for ch in ',"\n'):
            cls = '"' + cls.replace('"', '""') + '"'
        sm = log.smoothed[i]
        lines.append(f"{log.frames[i]},{log.times[i]:.6f},{log.scores[i]:.6f},{log.gate[i]},{cls},"
                     + ("" if sm != sm else f"{sm:.6f}"))
    return "\n".join(lines) + "\n"


def events_jsonl(events: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(dict(e), ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n" for e in events)


def curve_png(log: ScoreLog, title: str = "", gate: Optional[GateConfig] = None) -> bytes:
    """The score curve as PNG bytes (matplotlib's Agg canvas directly: no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=CURVE_SIZE_IN, dpi=CURVE_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    t = np.frombuffer(log.times, dtype=np.float64) if len(log.times) else np.zeros(0)
    ax.plot(t, log.score_array(), color="tab:blue", linewidth=0.6, alpha=0.45, label="coarse score (raw)")
    smooth = log.smoothed_array()
    if np.isfinite(smooth).any():
        ax.plot(t, smooth, color="tab:blue", linewidth=1.6, label="smoothed (what the gate uses)")
    for k, (start, end) in enumerate(log.openings()):
        t0 = t[start]
        t1 = t[end - 1] if end - 1 > start else t0 + (t[1] - t[0] if len(t) > 1 else 1.0) * 0.5
        ax.axvspan(t0, t1, color="tab:red", alpha=0.18, label="gate open" if k == 0 else None)
        label = next((log.fine_class(i) for i in range(end - 1, start - 1, -1) if log.fine_class(i)), "")
        if label:
            ax.text((t0 + t1) / 2, 1.02, label, ha="center", va="bottom", fontsize=8, color="tab:red", clip_on=False)
    if gate is not None:
        ax.axhline(gate.on_threshold, color="grey", linestyle="--", linewidth=0.7, label="on / off threshold")
        ax.axhline(gate.off_threshold, color="grey", linestyle="--", linewidth=0.7)
    ax.set_ylim(-0.02, 1.0 if not len(log) else max(1.0, float(np.nanmax(log.score_array())) + 0.02))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("coarse score")
    if title:
        ax.set_title(title, pad=14)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(out_dir: Union[str, Path], log: ScoreLog, events: Sequence[Mapping[str, Any]], title: str = "",
                 gate: Optional[GateConfig] = None) -> Dict[str, Path]:
    """Write scores.csv, events.jsonl and curve.png into `out_dir`, each atomically; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "scores": atomic_write_bytes(out / SCORES_CSV, scores_csv(log).encode("utf-8")),
        "events": atomic_write_bytes(out / EVENTS_JSONL, events_jsonl(events).encode("utf-8")),
        "curve": atomic_write_bytes(out / CURVE_PNG, curve_png(log, title, gate)),
    }
    return paths

