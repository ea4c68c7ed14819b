"""regionblip_ros.drawing: boxes outlined and captioned on a copy of the frame."""

import numpy as np
import pytest

from regionblip_ros.drawing import COLOURS, annotate

GREY = (128, 128, 128)


@pytest.fixture
def frame():
    return np.full((48, 64, 3), 128, np.uint8)


def test_each_box_is_outlined_in_its_own_colour_and_its_inside_left_alone(frame):
    drawn = annotate(frame, np.array([[10, 20, 40, 40], [44, 30, 60, 46]], np.float32), ["a", "b"])
    assert tuple(drawn[30, 10]) == COLOURS[0]  # left edge of box 0
    assert tuple(drawn[39, 39]) == COLOURS[0]  # bottom-right pixel (x2 - 1, y2 - 1)
    assert tuple(drawn[40, 44]) == COLOURS[1]  # left edge of box 1
    assert tuple(drawn[30, 25]) == GREY


def test_the_caption_sits_on_a_band_above_the_box(frame):
    drawn = annotate(frame, np.array([[10, 30, 40, 40]], np.float32), ["red cup"])
    band = drawn[18:30, 10:40]
    assert (band == COLOURS[0]).all(axis=-1).any()
    assert (band == 0).all(axis=-1).any()  # black text on it


def test_a_box_at_the_top_edge_gets_its_caption_inside(frame):
    drawn = annotate(frame, np.array([[10, 0, 40, 40]], np.float32), ["top"])
    assert (drawn[2:12, 12:40] == 0).all(axis=-1).any()


def test_the_input_frame_is_not_modified(frame):
    annotate(frame, np.array([[10, 20, 40, 40]], np.float32), ["a"])
    assert (frame == 128).all()


def test_no_boxes_give_an_unchanged_copy(frame):
    np.testing.assert_array_equal(annotate(frame, np.empty((0, 4), np.float32), []), frame)


def test_boxes_and_captions_must_pair_up(frame):
    with pytest.raises(ValueError, match="2 boxes but 1 captions"):
        annotate(frame, np.zeros((2, 4), np.float32), ["a"])
