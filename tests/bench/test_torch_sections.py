"""The PyTorch sections: called only where torch imports; skipped with the reason otherwise.
The profiling module (edge_vad_models.profiling.sequence_cost) is replaced by a fake with its API."""

from __future__ import annotations

import sys
import types

import pytest

from edge_vad.bench import torch_sections

ROWS = [
    {"length": n, "rwkv_ms": 0.01 * n, "transformer_ms": 1e-5 * n * n + 0.02 * n, "rwkv_gflops": 1e-4 * n,
     "transformer_gflops": 1e-6 * n * n + 2e-4 * n}
    for n in torch_sections.FIG4_LENGTHS
]


@pytest.fixture
def fake_profiling(monkeypatch):
    calls = {}
    mod = types.ModuleType(torch_sections.PROFILING_MODULE)

    def rwkv_vs_transformer(lengths=(250,), width=512, device="cpu"):
        calls["rwkv"] = (tuple(lengths), device)
        return [dict(r) for r in ROWS if r["length"] in lengths]

    def fine_stage_budget(encoder="clip-vit-b16", frames_per_snippet=16):
        calls["budget"] = encoder
        calls["frames_per_snippet"] = frames_per_snippet
        return {"params": 28_400_000, "gflops": 22.17, "weights": "random"}

    mod.rwkv_vs_transformer = rwkv_vs_transformer
    mod.fine_stage_budget = fine_stage_budget
    monkeypatch.setitem(sys.modules, torch_sections.PROFILING_MODULE, mod)
    streaming = types.ModuleType(torch_sections.STREAMING_MODULE)

    def streaming_rows(lengths=(250,), device="cpu", **options):
        calls["streaming"] = (tuple(lengths), device, options)
        return [{"length": n, "rwkv_step_ms": 1.0 + n / 1e4, "transformer_window_ms": 1e-4 * n * n,
                 "transformer_kv_ms": 1e-3 * n, "rwkv_state_bytes": 16384, "transformer_window_bytes": 2048 * n,
                 "transformer_kv_bytes": 8192 * n} for n in lengths]

    streaming.streaming_rows = streaming_rows
    monkeypatch.setitem(sys.modules, torch_sections.STREAMING_MODULE, streaming)
    monkeypatch.setattr(torch_sections, "torch_status", lambda: (True, ""))
    return calls


def test_rwkv_rows_and_derived_figures(fake_profiling):
    out = torch_sections.rwkv_vs_transformer("cuda", skip=False)
    assert fake_profiling["rwkv"] == (torch_sections.FIG4_LENGTHS, "cuda")
    assert [r["length"] for r in out["rows"]] == list(torch_sections.FIG4_LENGTHS)
    assert out["skipped"] is None and out["max_length"] == 1750
    assert out["speedup_at_max_length"] == pytest.approx((1e-5 * 1750 ** 2 + 0.02 * 1750) / 17.5, rel=1e-3)
    assert out["rwkv_time_linearity_r2"] == pytest.approx(1.0)


def test_streaming_rows_and_growth(fake_profiling):
    out = torch_sections.rwkv_vs_transformer("cpu", skip=False)["streaming"]
    assert fake_profiling["streaming"] == (torch_sections.FIG4_LENGTHS, "cpu", torch_sections.STREAMING_CPU_OPTIONS)
    assert [r["length"] for r in out["rows"]] == list(torch_sections.FIG4_LENGTHS)
    assert out["rwkv_step_growth"] == pytest.approx(1.175 / 1.025, abs=1e-3)
    assert out["transformer_window_growth"] == pytest.approx(49.0) and out["transformer_kv_growth"] == pytest.approx(7.0)
    assert fake_profiling["rwkv"]  # the whole-sequence sweep runs too


def test_fine_reference_budget_passes_through(fake_profiling):
    out = torch_sections.fine_reference_budget()
    assert out["params"] == 28_400_000 and out["encoder"] == "clip-vit-b16" and out["skipped"] is None
    assert fake_profiling["frames_per_snippet"] == 1  # CLIP runs once per snippet (CLIP_FRAMES_PER_SNIPPET)
    torch_sections.fine_reference_budget("lite0-minilm")
    assert fake_profiling["frames_per_snippet"] == 16


def test_skip_flag(fake_profiling):
    out = torch_sections.rwkv_vs_transformer("cpu", skip=True)
    assert out["rows"] == [] and "--skip-rwkv" in out["skipped"]
    assert "rwkv" not in fake_profiling


def test_without_torch_everything_says_why(monkeypatch):
    monkeypatch.setattr(torch_sections, "torch_status", lambda: (False, "torch is not installed (test)"))
    assert torch_sections.rwkv_vs_transformer("cpu", skip=False) == {"rows": [], "skipped": "torch is not installed (test)"}
    assert torch_sections.fine_reference_budget()["skipped"] == "torch is not installed (test)"
    assert torch_sections.fine_torch_latency("cpu", 200, 20)["skipped"] == "torch is not installed (test)"


def test_profiling_module_missing_is_a_skip(monkeypatch):
    monkeypatch.setattr(torch_sections, "torch_status", lambda: (True, ""))
    monkeypatch.setitem(sys.modules, torch_sections.PROFILING_MODULE, None)  # import raises ImportError
    out = torch_sections.rwkv_vs_transformer("cpu", skip=False)
    assert out["rows"] == [] and torch_sections.PROFILING_MODULE in out["skipped"]


def test_cuda_without_gpu_is_a_skip():
    torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert "no CUDA device" in torch_sections.fine_torch_latency("cuda", 200, 20)["skipped"]


def test_sweep_options_only_what_the_function_accepts():
    def narrow(lengths=(), width=512, device="cpu"):
        return []

    def wide(lengths=(), width=512, device="cpu", repeats=5, warmup=1, recurrent_repeats=None, progress=True):
        return []

    assert torch_sections._sweep_options(narrow, "cpu") == {}
    cpu = torch_sections._sweep_options(wide, "cpu")
    assert cpu == dict(torch_sections.SWEEP_CPU_OPTIONS, progress=False)
    assert torch_sections._sweep_options(wide, "cuda") == {"progress": False}  # the GPU keeps its defaults


def test_cpu_threads_is_restored():
    torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")
    before = torch.get_num_threads()
    with torch_sections.cpu_threads("cpu"):
        assert torch.get_num_threads() == torch_sections.TORCH_CPU_THREADS
    assert torch.get_num_threads() == before
