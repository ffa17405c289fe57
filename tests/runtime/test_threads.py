"""Intra-op threads: the config's when it sets them, else the detected board's target profile, else the host's;
the backend plan hands the number to the CPU backends."""

from __future__ import annotations

from pathlib import Path

from edge_vad.bench.profiles import load_profile, target_names
from edge_vad.bundle import verify_bundle
from edge_vad.config import RuntimeConfig
from edge_vad.runtime import threads as threads_mod
from edge_vad.runtime.backend_plan import plan_backends
from edge_vad_test_support.bundles import shipped_bundle


def _board(root: Path, model: bytes) -> Path:
    path = root / "proc" / "device-tree" / "model"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    return root


def test_every_profile_names_its_default_and_where_it_comes_from():
    for name in target_names():
        rt = load_profile(name).runtime
        assert rt.threads >= 1 and rt.threads_source.strip(), name


def test_the_config_wins(tmp_path):
    _board(tmp_path, b"NVIDIA Jetson Nano Developer Kit\x00")
    assert threads_mod.resolve_threads(RuntimeConfig(threads=3), tmp_path) == (3, "config runtime.threads")


def test_the_detected_board_else_the_host(tmp_path):
    nano = load_profile("jetson-nano").runtime
    threads, why = threads_mod.resolve_threads(RuntimeConfig(), _board(tmp_path / "nano", b"NVIDIA Jetson Nano Developer Kit\x00"))
    assert threads == nano.threads and why.startswith("jetson-nano target profile") and nano.threads_source in why
    host = load_profile("host").runtime
    threads, why = threads_mod.resolve_threads(None, tmp_path / "bare")
    assert threads == host.threads and why.startswith("host target profile (no board detected)")


def test_the_plan_gives_the_cpu_backends_the_resolved_threads(monkeypatch):
    bundle = shipped_bundle()
    if bundle is None:
        import pytest

        pytest.skip("the shipped default bundle is not in this checkout")
    manifest = verify_bundle(bundle).manifest
    monkeypatch.setattr(threads_mod, "board_threads", lambda root=Path("/"): (3, "a test board"))
    plan = plan_backends(manifest, bundle, "onnxruntime", RuntimeConfig())
    assert (plan.threads, plan.threads_source) == (3, "a test board")
    threads = {s.stage: s.options.get("threads") for s in plan.stages if s.backend == "onnxruntime"}
    # the describer (one small Gemm, fine-stage frames only) keeps to one thread whatever the board's count
    assert threads == {"coarse_backbone": 3, "coarse_head": 3, "fine_describer": 1, "fine_head": 3}
    plan = plan_backends(manifest, bundle, "tflite", RuntimeConfig(threads=1))
    assert plan.threads == 1 and all(s.options.get("num_threads") == 1 for s in plan.stages if s.backend == "tflite")
