"""Streaming cost per new frame: the KV-cached Transformer step is the causal encoder's output for that frame, the
RWKV state is the same size at every length, and the rows carry what bench reads. No timing is checked."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the train extra (PyTorch)")

from edge_vad.constants import RWKV_BLOCKS  # noqa: E402
from edge_vad_models.profiling import sequence_cost as sc  # noqa: E402
from edge_vad_models.profiling import streaming_cost as st  # noqa: E402

WIDTH = 64  # one head of 64: small and fast; the encoder code is width-generic


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return sc.build_transformer(128, RWKV_BLOCKS).eval()  # two heads


def test_kv_cached_steps_equal_the_causal_encoder(encoder):
    x = torch.randn(1, 30, 128)
    with torch.inference_mode():
        full = encoder(x, mask=sc.causal_mask(30), is_causal=True)
        stepped = st.KVCachedEncoder(encoder, 32)
        ys = torch.stack([stepped.step(x[:, t]) for t in range(30)], dim=1)
        filled = st.KVCachedEncoder(encoder, 32)
        filled.fill(x[:, :29])
        last = filled.step(x[:, 29])
    torch.testing.assert_close(ys, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last, full[:, 29], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(filled.keys[:, :, :30], stepped.keys[:, :, :30], atol=1e-5, rtol=1e-5)
    filled.truncate(10)  # forget frames 10..: a step now sees the first 10 frames only
    with torch.inference_mode():
        again = filled.step(x[:, 10])
        short = encoder(x[:, :11], mask=sc.causal_mask(11), is_causal=True)[:, 10]
    torch.testing.assert_close(again, short, atol=1e-5, rtol=1e-5)


def test_rows_have_the_keys_bench_reads_and_the_memory_of_each_form():
    lengths = (5, 20)
    rows = st.streaming_rows(lengths=lengths, width=WIDTH, rounds=1, window_rounds=1)
    assert [r["length"] for r in rows] == list(lengths)
    for r in rows:
        assert set(st.ROW_KEYS) <= set(r) and all(r[k] > 0 for k in st.ROW_KEYS)
        assert r["rwkv_state_bytes"] == rows[0]["rwkv_state_bytes"]  # constant per stream
        assert r["transformer_window_bytes"] == r["length"] * WIDTH * 4
        assert r["transformer_kv_bytes"] == 2 * RWKV_BLOCKS * r["length"] * WIDTH * 4


def test_a_full_cache_is_an_error(encoder):
    from edge_vad.errors import EdgeVadError

    cache = st.KVCachedEncoder(encoder, 2)
    with torch.inference_mode():
        cache.step(torch.randn(1, 128))
        cache.step(torch.randn(1, 128))
        with pytest.raises(EdgeVadError, match="full"):
            cache.step(torch.randn(1, 128))
