"""The heatmap the device draws: where the evidence and the motion are, its top region's box, and the overlay."""

from __future__ import annotations

import numpy as np
import pytest

from edge_vad.runtime.heatmap import (MOTION_GRID, draw_top_region, evidence_heatmap, grey_motion, map_change,
                                      top_cells, top_region)


def test_top_region_box_is_in_frame_pixels():
    heat = np.zeros((7, 7), np.float32)
    heat[2, 5] = 1.0
    heat[2, 6] = 0.8  # joins the region (>= 0.6 of the peak)
    heat[5, 0] = 0.3  # too weak
    box = top_region(heat, (240, 360))
    assert box == {"x": round(5 * 360 / 7), "y": round(2 * 240 / 7), "w": 360 - round(5 * 360 / 7),
                   "h": round(3 * 240 / 7) - round(2 * 240 / 7), "score": pytest.approx(1.0), "cells": 2}


def test_a_flat_map_has_no_region_and_leaves_the_frame_alone():
    frame = np.full((48, 64, 3), 90, np.uint8)
    assert top_region(np.zeros((7, 7)), frame.shape[:2]) is None
    assert top_cells(np.full((7, 7), np.nan)) is None
    assert np.array_equal(draw_top_region(frame, np.ones((7, 7))), frame)


def test_the_heatmap_follows_what_moves_inside_the_evidence():
    previous = np.zeros((224, 224), np.uint8)
    grey = previous.copy()
    grey[40:56, 160:176] = 200  # something appears top right
    grey[180:200, 10:30] = 200  # and something bottom left
    motion = grey_motion(grey, previous)
    assert motion.shape == (MOTION_GRID, MOTION_GRID) and not grey_motion(grey, None).any()
    evidence = np.zeros((7, 7), np.float32)
    evidence[1, 5] = 1.0  # the model's evidence is top right only
    heat = evidence_heatmap(evidence, motion)
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    assert 5 <= r <= 7 and 20 <= c <= 22  # the moving block inside the evidence, not the other one
    still = evidence_heatmap(evidence, np.zeros_like(motion))  # nothing moves: the evidence alone
    assert np.unravel_index(int(np.argmax(still)), still.shape)[1] >= 20


def test_map_change_sums_the_channels_change():
    a = np.zeros((3, 7, 7), np.float32)
    b = a.copy()
    b[:, 4, 2] = [1.0, -2.0, 0.5]
    np.testing.assert_allclose(map_change(b, a)[4, 2], 3.5)
    assert not map_change(b, None).any()


@pytest.mark.parametrize("interpolation", ["exact-area", "area", "linear"])
def test_the_preprocessors_grey_is_grey_input_of_the_same_frame(interpolation):
    """The coarse stage takes the heatmap's grey frame from the model's own resized pixels (one colour conversion
    instead of a second resize); it must equal grey_input, which training and calibration use."""
    from edge_vad.backends.base import TensorSpec
    from edge_vad.bundle.manifest import Preprocessing
    from edge_vad.runtime.heatmap import grey_input
    from edge_vad.runtime.preprocess import Preprocessor

    rng = np.random.default_rng(3)
    pre = Preprocessing(size=224, mean=[0.5] * 3, std=[0.5] * 3, pixel_format="RGB", resize="whole frame",
                        interpolation=interpolation, layout="NCHW")
    prep = Preprocessor(pre, TensorSpec("image", (1, 3, 224, 224), "float32"))
    assert prep.last_grey() is None  # nothing resized yet on this thread
    for shape in ((360, 640, 3), (720, 1280, 3), (240, 360, 3)):
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        prep(frame)
        np.testing.assert_array_equal(prep.last_grey(), grey_input(frame, 224, interpolation))
