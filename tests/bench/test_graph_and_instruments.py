"""The int8 graph tools (MACs per op, branches, graphs cut to some outputs or to a prefix: the same numbers as the
whole graph), the callgrind helpers (totals line, the ctypes window the count is collected in), the thread
sweep's counts. No timing is checked."""

from __future__ import annotations

import numpy as np
import pytest

from edge_vad.bench import instructions, threads
from edge_vad.bench.tflite_graph import op_macs
from edge_vad_test_support.bundles import shipped_bundle


def test_macs_of_each_op_kind():
    assert op_macs("CONV_2D", [(1, 14, 14, 112), (672, 1, 1, 112)], [(1, 14, 14, 672)]) == 14 * 14 * 672 * 112
    assert op_macs("DEPTHWISE_CONV_2D", [(1, 14, 14, 672), (1, 5, 5, 672)], [(1, 7, 7, 672)]) == 7 * 7 * 672 * 25
    assert op_macs("TRANSPOSE_CONV", [(4,), (128, 2, 2, 1280), (1, 7, 7, 1280)], [(1, 14, 14, 128)]) == \
        7 * 7 * 1280 * 128 * 2 * 2
    assert op_macs("FULLY_CONNECTED", [(1, 1280), (1000, 1280)], [(1, 1000)]) == 1280 * 1000
    assert op_macs("MEAN", [(1, 7, 7, 1280), (2,)], [(1, 1280)]) == 7 * 7 * 1280


@pytest.fixture(scope="module")
def int8_backbone():
    pytest.importorskip("ai_edge_litert", reason="needs ai-edge-litert (the coral extra) for TFLite graphs")
    bundle = shipped_bundle()
    if bundle is None or not (bundle / "coarse_backbone_int8.tflite").is_file():
        pytest.skip("the shipped bundle's int8 backbone is not in this checkout")
    return bundle / "coarse_backbone_int8.tflite"


def _run(content: bytes, x: np.ndarray) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return {d["name"]: it.get_tensor(d["index"]).copy() for d in it.get_output_details()}


def test_branches_and_cut_graphs_of_the_shipped_backbone(int8_backbone):
    from edge_vad.bench.tflite_graph import prefix, prune, read_graph

    g = read_graph(int8_backbone)
    # every output is needed on every frame: the ImageNet classifier is the fine stage's describer graph
    assert set(g.outputs) == {"feature", "heatmap", "trunk_feature"}
    assert "FULLY_CONNECTED" not in {op.name for op in g.ops}
    by = g.macs_by_outputs()
    assert sum(by.values()) == g.total_macs
    assert by[("feature", "heatmap")] > 0  # the F_A branch
    trunk = by[("feature", "heatmap", "trunk_feature")]
    assert trunk > 0.8 * g.total_macs  # the Lite0 trunk serves every output
    x = np.random.default_rng(0).integers(-128, 128, (1, 224, 224, 3), dtype=np.int8)
    full = _run(int8_backbone.read_bytes(), x)
    cut = _run(prune(int8_backbone, ("feature", "heatmap")), x)
    assert len(cut) == 2
    for name, value in cut.items():
        np.testing.assert_array_equal(value, full[name])  # the kept outputs are exactly the full graph's
    # the prefix ending at the last op computes one of the full graph's outputs
    (_, value), = _run(prefix(int8_backbone, len(g.ops) - 1), x).items()
    assert any(v.shape == value.shape and np.array_equal(v, value) for v in full.values())


def test_callgrind_totals_line():
    text = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 100\ntotals: 294521424\n"
    assert instructions.parse_totals(text) == 294521424
    assert instructions.parse_totals("events: Ir\nsummary: 42\n") == 42
    with pytest.raises(Exception, match="totals"):
        instructions.parse_totals("not callgrind output")


def test_the_counted_work_runs_inside_one_ffi_call():
    ran = []
    instructions._in_ffi_call(lambda: ran.append(1))
    assert ran == [1]
    with pytest.raises(ZeroDivisionError):  # an error inside the callback is raised outside the C frame
        instructions._in_ffi_call(lambda: 1 / 0)


def test_without_valgrind_the_count_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(instructions, "valgrind_path", lambda: None)
    out = instructions.instructions_per_frame(tmp_path, "onnxruntime", {}, tmp_path / "v.mp4")
    assert out == {"skipped": instructions.VALGRIND_HINT}


def test_thread_counts():
    assert threads.thread_counts(1) == [1, 2]  # always 1 against 2
    assert threads.thread_counts(2) == [1, 2]
    assert threads.thread_counts(16) == list(range(1, threads.MAX_THREADS + 1))
