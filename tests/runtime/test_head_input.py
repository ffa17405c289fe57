"""edge_vad.head_input: the whole-stream and streaming forms agree, and bad kinds are one clear error."""

import numpy as np
import pytest

from edge_vad.errors import EdgeVadError
from edge_vad.head_input import FEATURE, FEATURE_ABSDIFF, head_input_dim, head_input_step, head_inputs


def test_absdiff_values_by_hand():
    x = np.array([[1.0, 2.0], [4.0, 0.0], [4.0, 1.0]], np.float32)
    out = head_inputs(x, FEATURE_ABSDIFF)
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :2], x)
    np.testing.assert_array_equal(out[:, 2:], [[0, 0], [3, 2], [0, 1]])


@pytest.mark.parametrize("kind", [FEATURE, FEATURE_ABSDIFF])
def test_streaming_matches_whole_stream(kind):
    x = np.random.default_rng(0).random((20, 5)).astype(np.float32)
    previous, rows = None, []
    for f in x:
        rows.append(head_input_step(f, previous, kind))
        previous = f
    np.testing.assert_array_equal(np.stack(rows), head_inputs(x, kind))
    assert rows[0].shape == (head_input_dim(kind, 5),)


def test_unknown_kind_and_bad_shape_are_clear_errors():
    with pytest.raises(EdgeVadError, match="unknown coarse head input"):
        head_inputs(np.zeros((2, 3)), "optical-flow")
    with pytest.raises(EdgeVadError, match=r"\[frames, dim\]"):
        head_inputs(np.zeros(3), FEATURE_ABSDIFF)
