"""Fig. 4 analog and fine-stage budget: analytic FLOPs against FlopCounterMode, scaling in T, rows, PNG, budget."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from edge_vad.constants import RWKV_BLOCKS, SNIPPET_FRAMES  # noqa: E402
from edge_vad.errors import EdgeVadError  # noqa: E402
from edge_vad_models.profiling import sequence_cost as sc  # noqa: E402
from edge_vad_models.profiling.counting import count_flops, count_params  # noqa: E402
from edge_vad_models.rwkv import EnhancedRWKV  # noqa: E402

FLOPS_RTOL = 0.10  # analytic vs FlopCounterMode (the brief's bound; the formulas are exact today)
WIDTH = 32  # small models: the formulas are width-generic, the tests must be fast


def _rwkv(width: int = WIDTH) -> EnhancedRWKV:
    torch.manual_seed(0)
    return EnhancedRWKV(width).eval()


@pytest.mark.parametrize("length", [1, 7, 40])
def test_rwkv_flops_match_flop_counter_in_both_forms(length):
    model = _rwkv()
    x = torch.randn(1, length, WIDTH)
    analytic = sc.rwkv_flops(length, WIDTH, RWKV_BLOCKS)
    assert count_flops(lambda: model(x), model) == pytest.approx(analytic, rel=FLOPS_RTOL)
    assert count_flops(lambda: sc.rwkv_recurrent(model, x), model) == pytest.approx(analytic, rel=FLOPS_RTOL)


@pytest.mark.parametrize("length", [16, 128])
def test_transformer_flops_match_flop_counter(length):
    # At T=128, d=32 the attention term is ~40 % of the total: dropping it would fail the tolerance.
    model = sc.build_transformer(WIDTH, RWKV_BLOCKS).eval()
    x, mask = torch.randn(1, length, WIDTH), sc.causal_mask(length)
    counted = count_flops(lambda: model(x, mask=mask, is_causal=True), model)
    assert counted == pytest.approx(sc.transformer_flops(length, WIDTH, RWKV_BLOCKS), rel=FLOPS_RTOL)
    assert sc.transformer_attention_flops(128, WIDTH) / sc.transformer_flops(128, WIDTH) > 0.3


def test_counting_sees_through_the_inference_fast_path():
    # Under no_grad, nn.TransformerEncoder runs one fused op FlopCounterMode does not know (it would count 0).
    model = sc.build_transformer(WIDTH, 1).eval().requires_grad_(False)  # frozen: the fast path's condition
    x = torch.randn(1, 8, WIDTH)
    with torch.no_grad():
        counted = count_flops(lambda: model(x), model)
    assert counted == pytest.approx(sc.transformer_flops(8, WIDTH, 1), rel=FLOPS_RTOL)
    assert not any(p.requires_grad for p in model.parameters())  # restored as they were


def test_rwkv_cost_is_linear_and_transformer_attention_quadratic():
    model = _rwkv()
    measured = {}
    for length in (24, 48, 96):
        x = torch.randn(1, length, WIDTH)
        measured[length] = count_flops(lambda: model(x), model)
    assert measured[48] / measured[24] == pytest.approx(2.0, rel=1e-6)
    assert measured[96] / measured[24] == pytest.approx(4.0, rel=1e-6)

    tf = sc.build_transformer(WIDTH, RWKV_BLOCKS).eval()
    attention = {}
    for length in (32, 64):
        x, mask = torch.randn(1, length, WIDTH), sc.causal_mask(length)
        total = count_flops(lambda: tf(x, mask=mask, is_causal=True), tf)
        linear = sc.transformer_flops(length, WIDTH) - sc.transformer_attention_flops(length, WIDTH)
        attention[length] = total - linear  # what the counter saw beyond the linear-in-T part
    assert attention[32] > 0
    assert attention[64] / attention[32] == pytest.approx(4.0, rel=0.02)
    # So the Transformer / RWKV FLOPs ratio grows with T, at the paper's width too.
    ratios = [sc.transformer_flops(n) / sc.rwkv_flops(n) for n in sc.FIG4_LENGTHS]
    assert ratios == sorted(ratios) and ratios[-1] - ratios[0] > 1.0  # 3.24 at T=250 -> 4.71 at T=1750


def test_defaults_are_the_fine_heads():
    assert EnhancedRWKV(8).n_blocks == RWKV_BLOCKS


def test_rows_table_and_png(tmp_path):
    rows = sc.rwkv_vs_transformer(lengths=(8, 16), width=WIDTH, repeats=1, warmup=0, progress=False)
    assert [r["length"] for r in rows] == [8, 16]
    for r in rows:
        assert set(sc.ROW_KEYS) <= set(r)
        assert r["rwkv_ms"] == r["rwkv_parallel_ms"] > 0 and r["rwkv_recurrent_ms"] > 0 and r["transformer_ms"] > 0
        assert r["speedup"] == pytest.approx(r["transformer_ms"] / r["rwkv_ms"], rel=0.01)
        assert r["rwkv_gflops"] == pytest.approx(sc.rwkv_flops(r["length"], WIDTH) / 1e9, abs=1e-4)
        assert r["transformer_gflops"] > r["rwkv_gflops"]
    table = sc.markdown_table(rows)
    assert table.count("\n") == 4 and "| 16 |" in table
    png = sc.write_fig4(rows, tmp_path / "sub" / "fig4.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(EdgeVadError, match="sequence lengths"):
        sc.rwkv_vs_transformer(lengths=(0,), progress=False)
    with pytest.raises(EdgeVadError, match="no rows"):
        sc.write_fig4([], "x.png")
    if not torch.cuda.is_available():
        with pytest.raises(EdgeVadError, match="no CUDA device"):
            sc.rwkv_vs_transformer(lengths=(4,), device="cuda", progress=False)


def test_torch_vit_twin_is_open_clips_tower():
    from edge_vad_models.profiling.vit_tower import open_clip_available, vit_b16_image_tower

    ok, why = open_clip_available()
    if not ok:
        pytest.skip(f"open_clip unavailable: {why}")
    small = {"image_size": 32, "layers": 2, "width": 128, "output_dim": 32}
    torch.manual_seed(0)
    reference, _ = vit_b16_image_tower("open_clip", small)
    twin, impl = vit_b16_image_tower("torch", small)
    assert impl == "torch"
    twin.load_state_dict(reference.state_dict(), strict=True)  # same names and shapes
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(twin(x), reference(x), atol=1e-5, rtol=1e-5)
    assert count_flops(lambda: twin(x), twin) == count_flops(lambda: reference(x), reference)
    # Full size, shapes only (meta device): the twin has ViT-B/16's parameter count and FLOPs.
    with torch.device("meta"):
        full, _ = vit_b16_image_tower("torch")
    pixels = torch.empty(1, 3, 224, 224, device="meta")
    assert count_params(full) == 86_192_640  # OpenAI CLIP ViT-B/16 visual tower
    assert count_flops(lambda: full(pixels), full) / 1e9 == pytest.approx(35.13, rel=0.01)  # 2 x 17.56 GMACs


def test_fine_stage_budget_clip_and_lite0():
    clip = sc.fine_stage_budget("clip-vit-b16")
    assert clip["weights"] == "random (architecture only)" and clip["frames_per_snippet"] == SNIPPET_FRAMES
    image, head = clip["parts"]["image_encoder"], clip["parts"]["head"]
    assert image["params"] == 86_192_640 and image["gflops_per_frame"] == pytest.approx(35.13, rel=0.01)
    # Head: linear 512->512, two TimeMix blocks (4 x 512^2 each), linear 512->512 (+ biases, LNs, mixes).
    assert head["params"] == pytest.approx(512 * 512 * 10, rel=0.01) and head["hidden_dim"] == 512
    assert clip["params"] == image["params"] + head["params"]
    expected = image["gflops_per_frame"] * SNIPPET_FRAMES + head["gflops_per_snippet"]
    assert clip["gflops"] == pytest.approx(expected, rel=1e-3)
    assert clip["gflops_per_frame"] == pytest.approx(clip["gflops"] / SNIPPET_FRAMES, rel=1e-3)

    lite = sc.fine_stage_budget("lite0-minilm", frames_per_snippet=4)
    assert lite["parts"]["image_encoder"]["shared_with_coarse"] is True
    # EfficientNet-Lite0 trunk: ~385 M MACs (as tests/export counts its ONNX graph).
    assert lite["parts"]["image_encoder"]["gflops_per_frame"] == pytest.approx(0.77, rel=0.03)
    assert lite["parts"]["head"]["feature_dim"] == 1280
    assert lite["gflops_beyond_coarse"] == pytest.approx(lite["parts"]["head"]["gflops_per_snippet"], abs=1e-4)
    with pytest.raises(EdgeVadError, match="unknown fine-stage encoder"):
        sc.fine_stage_budget("resnet")
