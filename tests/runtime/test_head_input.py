"""edge_vad.head_input: values by hand, the whole-stream and streaming forms agree, bad kinds are one clear error."""

import numpy as np
import pytest

from edge_vad.errors import EdgeVadError
from edge_vad.head_input import (FEATURE, FEATURE_MOTION, TRUNK_FA_MOTION, MotionState, head_input_dim, head_input_step,
                                 head_inputs)


def test_motion_values_by_hand():
    x = np.array([[1.0, 2.0], [4.0, 0.0], [4.0, 1.0], [4.0, 1.0]], np.float32)
    out = head_inputs(x, FEATURE_MOTION)
    assert out.shape == (4, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :2], x)
    # |d| = [0,0], [3,2], [0,1], [0,0]; motion = max of the last two |d|
    np.testing.assert_array_equal(out[:, 2:], [[0, 0], [3, 2], [3, 2], [0, 1]])


def test_doubled_frames_do_not_zero_the_motion():
    """2x frame-doubled footage: every other one-step difference is 0, the two-step max never is."""
    rng = np.random.default_rng(1)
    distinct = rng.random((10, 3)).astype(np.float32)
    doubled = np.repeat(distinct, 2, axis=0)
    motion = head_inputs(doubled, FEATURE_MOTION)[2:, 3:]
    assert (motion.max(axis=1) > 0).all()


@pytest.mark.parametrize("kind", [FEATURE, FEATURE_MOTION])
def test_streaming_matches_whole_stream(kind):
    x = np.random.default_rng(0).random((20, 5)).astype(np.float32)
    state, rows = MotionState(), []
    for f in x:
        row, state = head_input_step(f, state, kind)
        rows.append(row)
    np.testing.assert_array_equal(np.stack(rows), head_inputs(x, kind))
    assert rows[0].shape == (head_input_dim(kind, 5),)


def test_unknown_kind_and_bad_shape_are_clear_errors():
    with pytest.raises(EdgeVadError, match="unknown coarse head input"):
        head_inputs(np.zeros((2, 3)), "optical-flow")
    with pytest.raises(EdgeVadError, match=r"\[frames, dim\]"):
        head_inputs(np.zeros(3), FEATURE_MOTION)


def test_trunk_fa_motion_stream_equals_its_streaming_form():
    rng = np.random.default_rng(3)
    maps = rng.normal(0, 1, (9, 4, 7, 7)).astype(np.float32)
    trunk = rng.random((9, 10)).astype(np.float32)
    whole = head_inputs(maps.mean(axis=(2, 3)), TRUNK_FA_MOTION, trunk, maps)
    assert whole.shape == (9, head_input_dim(TRUNK_FA_MOTION, 4, 10)) == (9, 18)
    np.testing.assert_array_equal(whole[:, :10], trunk)
    assert not whole[0, 10:].any()  # stream start: no previous map, no motion
    d = np.abs(maps[5] - maps[4])
    np.testing.assert_allclose(whole[5, 10:], np.concatenate([d.mean(axis=(1, 2)), d.max(axis=(1, 2))]), rtol=1e-6)
    state, rows = MotionState(), []
    for t in range(9):
        x, state = head_input_step(maps[t].mean(axis=(1, 2)), state, TRUNK_FA_MOTION, trunk[t], maps[t])
        rows.append(x)
    np.testing.assert_array_equal(np.stack(rows), whole)
    with pytest.raises(EdgeVadError, match="trunk"):
        head_inputs(maps.mean(axis=(2, 3)), TRUNK_FA_MOTION)
