"""tools/hand_drawn.py: the README's hand-drawn picture, its boxes, and reading runtime.cli's lines back."""

import numpy as np
import pytest

from tools import hand_drawn
from training.data.backgrounds import MIN_COLOUR_DISTANCE, colour_distance


def test_the_picture_is_not_the_models_square_and_each_box_holds_its_shape():
    picture, boxes = hand_drawn.draw_picture()
    assert picture.shape == (hand_drawn.HEIGHT, hand_drawn.WIDTH, 3) == (160, 256, 3)
    for (truth, (x1, y1, x2, y2)), (_, _, colour) in zip(boxes, hand_drawn.SHAPES):
        inside = (picture[y1:y2, x1:x2] == colour).all(axis=2)
        assert inside.mean() > 0.3, truth
        # the box is the shape's extent: it shows on each edge (the circle over the square leaves its edges too)
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), truth


def test_the_hand_drawn_ground_obeys_the_colour_rule_of_the_synthetic_backgrounds():
    ground = hand_drawn._gradient().reshape(-1, 3)
    assert min(colour_distance(p) for p in ground[::97]) >= MIN_COLOUR_DISTANCE


def test_runtime_cli_lines_are_read_back_as_boxes_and_texts():
    boxes, texts = hand_drawn.parse_described(
        "box 0 [150,22,201,73]: a large blue square (score -0.15, 9 ms)\n"
        "box 1 [1.5,2,3,4]: not described: box is empty\n")
    assert boxes == [[150, 22, 201, 73], [1.5, 2, 3, 4]]
    assert texts == ["a large blue square", "not described: box is empty"]
    with pytest.raises(ValueError, match="no 'box i"):
        hand_drawn.parse_described("runtime.cli: error")
