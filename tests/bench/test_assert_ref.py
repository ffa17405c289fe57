"""--assert: +-30 % against a reference file; a missing reference is one line, exit code 2."""

from __future__ import annotations

import json

import pytest

from edge_vad.bench.assert_ref import (
    REFERENCE_FIGURES,
    TOLERANCE,
    compare,
    find_reference,
    load_reference,
    lookup,
    reference_from_result,
)
from edge_vad.errors import EdgeVadError

RESULT = {"target": "host", "host": {"cpu": "x"}, "on_target": True, "run": {"started_at": "2026-01-01T00:00:00+00:00"},
          "stages": {"coarse_backbone": {"p50_ms": 20.0}, "fine_encoder": {"p50_ms": None}},
          "end_to_end": {"fps": 40.0, "peak_rss_mb": 170.0, "gate_duty": 0.07},
          "cascade_vs_always_on": {"speedup": 1.1, "auc_cascade": 0.7}}


def test_tolerance_is_thirty_percent():
    assert TOLERANCE == 0.30


def test_lookup_dotted_paths():
    assert lookup(RESULT, "stages.coarse_backbone.p50_ms") == 20.0
    assert lookup(RESULT, "stages.nope.p50_ms") is None


def test_within_and_outside_tolerance():
    ref = {"figures": {"stages.coarse_backbone.p50_ms": 16.0, "end_to_end.fps": 40.0}}
    assert compare(RESULT, ref) == []  # 20 vs 16 is +25 %
    ref = {"figures": {"stages.coarse_backbone.p50_ms": 15.0, "end_to_end.fps": 60.0}}
    fails = compare(RESULT, ref)
    assert len(fails) == 2
    assert fails[0].startswith("stages.coarse_backbone.p50_ms: 20 vs reference 15 (+33%")
    assert "end_to_end.fps: 40 vs reference 60 (-33%" in fails[1]


def test_missing_value_fails_and_null_reference_is_skipped():
    ref = {"figures": {"end_to_end.decode_fps": 100.0, "stages.fine_encoder.p50_ms": None}}
    fails = compare(RESULT, ref)
    assert fails == ["end_to_end.decode_fps: no value in this run (reference 100)"]


def test_file_tolerance_overrides_default():
    ref = {"tolerance": 0.5, "figures": {"end_to_end.fps": 60.0}}
    assert compare(RESULT, ref) == []


def test_missing_reference_is_one_line_exit_2(tmp_path):
    with pytest.raises(EdgeVadError) as err:
        find_reference("jetson-nano", [tmp_path])
    msg = str(err.value)
    assert err.value.exit_code == 2 and "\n" not in msg
    assert "no reference figures for target 'jetson-nano'" in msg


def test_reference_round_trip(tmp_path):
    ref = reference_from_result(RESULT, "edge-vad bench --target host --json x.json", notes="test")
    assert ref["figures"]["end_to_end.fps"] == 40.0
    assert "stages.fine_encoder.p50_ms" not in ref["figures"]  # no number, not recorded
    assert set(ref["figures"]) <= set(REFERENCE_FIGURES)
    assert ref["measured"]["command"].startswith("edge-vad bench") and ref["measured"]["host"] == {"cpu": "x"}
    path = tmp_path / "host.json"
    path.write_text(json.dumps(ref))
    assert find_reference("host", [tmp_path]) == path
    assert compare(RESULT, load_reference(path)) == []


def test_malformed_reference_is_exit_2(tmp_path):
    path = tmp_path / "host.json"
    path.write_text("{}")
    with pytest.raises(EdgeVadError) as err:
        load_reference(path)
    assert err.value.exit_code == 2


def test_shipped_host_reference_is_well_formed():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reference" / "host.json"
    if not path.is_file():
        pytest.skip("no host reference recorded")
    ref = load_reference(path)
    assert ref["target"] == "host" and ref["measured"]["command"].startswith("edge-vad bench --target host")
    assert ref["measured"]["host"]["cpu"] and set(ref["figures"]) <= set(REFERENCE_FIGURES)
    assert all(isinstance(v, (int, float)) for v in ref["figures"].values())
