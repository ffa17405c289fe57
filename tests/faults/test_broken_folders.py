"""Case 2 of issue 14: output folders that cannot be used. In the middle of a run (a FILE where the clips or
snapshots folder should be, a read-only mount) the outputs degrade and scoring goes on to the last frame; the
records say why a clip is missing (`clip: null`, `clip_error`), and the losses are counted for exit code 4."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_vad.config import Config, EventsConfig, GateConfig
from edge_vad.runtime.events import Event
from edge_vad.runtime.metrics import Metrics
from edge_vad.runtime.outputs import OutputLedger
from edge_vad.runtime.pipeline import Pipeline
from edge_vad.sources import open_source
from edge_vad_test_support.bundles import write_video
from edge_vad_test_support.faults import read_only
from edge_vad_test_support.scripted import ScriptedCoarse

N = 150


def _cfg() -> Config:
    gate = GateConfig(smoothing_frames=1, on_threshold=0.6, off_threshold=0.4, min_open_s=0.0, cooldown_s=0.0)
    return Config(gate=gate, events=EventsConfig(clip_pre_roll_s=0.5, clip_post_roll_s=0.5))


def _video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "grey.mp4", [np.full((48, 64, 3), (7 * i) % 256, np.uint8) for i in range(N)], 10.0)


def _run(video: Path, events_dir: Path):
    scores = ([0.1] * 30 + [0.9] * 15) * 3 + [0.1] * 15  # three events, all closed before the end
    got = []
    ledger = OutputLedger(Metrics())
    with open_source(str(video)) as src:
        result = Pipeline(src, ScriptedCoarse(scores), None, _cfg(), emit=got.append, events_dir=events_dir,
                          ledger=ledger).run()
    return result, [e for e in got if isinstance(e, Event)], ledger


def test_a_file_where_the_clips_and_snapshots_folders_should_be(tmp_path: Path) -> None:
    events_dir = tmp_path / "ev"
    events_dir.mkdir()
    (events_dir / "clips").write_text("not a folder")
    (events_dir / "snapshots").write_text("not a folder")
    result, events, ledger = _run(_video(tmp_path), events_dir)
    assert result.error is None, result.error
    assert result.frames_scored == N  # every frame, not "internal error" at the first event
    ends = [e for e in events if e.type == "end"]
    assert len(ends) == 3
    for end in ends:
        assert end.clip is None and "clips folder" in end.clip_error and end.snapshot is None
    assert ledger.lost == {"clip": 3, "snapshot": 3}


def test_a_read_only_events_folder(tmp_path: Path) -> None:
    video = _video(tmp_path)
    with read_only(tmp_path / "ro") as events_dir:
        result, events, ledger = _run(video, events_dir)
    assert result.error is None and result.frames_scored == N
    ends = [e for e in events if e.type == "end"]
    assert len(ends) == 3 and all(e.clip is None and e.clip_error for e in ends)
    assert ledger.lost == {"clip": 3, "snapshot": 3}
