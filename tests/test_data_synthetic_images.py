"""Synthetic image scenes: deterministic, split-disjoint, non-overlapping shapes, captions that match the ground truth."""

import numpy as np
import pytest

from training.data.synthetic_images import GRID_CELLS, SyntheticImageDataset
from training.data.vocabulary import COLOURS, IMAGE_SHAPES, SIZES, parse_objects


def test_same_index_gives_the_same_scene():
    a, b = SyntheticImageDataset("image")[7], SyntheticImageDataset("image")[7]
    assert np.array_equal(a.image, b.image) and a.caption == b.caption and a.attributes == b.attributes


def test_train_and_eval_splits_hold_different_scenes():
    train = SyntheticImageDataset("image", split="train", length=50)
    held_out = SyntheticImageDataset("image", split="eval", length=50)
    train_images = {train[i].image.tobytes() for i in range(50)}
    assert not train_images & {held_out[i].image.tobytes() for i in range(50)}


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="unknown split 'test'"):
        SyntheticImageDataset("image", split="test")[0]


def test_image_is_square_uint8_rgb_of_the_requested_size():
    sample = SyntheticImageDataset("image", image_size=96)[0]
    assert sample.image.shape == (96, 96, 3) and sample.image.dtype == np.uint8
    assert sample.modality == "image" and sample.box_xyxy is None


def test_vocabulary_has_enough_variety():
    assert len(COLOURS) >= 6 and len(IMAGE_SHAPES) >= 4 and SIZES == ("small", "large")


def test_scenes_hold_one_to_five_pairwise_disjoint_shapes():
    dataset = SyntheticImageDataset("image", length=40)
    counts = set()
    for i in range(40):
        boxes = np.array([o["box_xyxy_px"] for o in dataset[i].attributes["objects"]])
        counts.add(len(boxes))
        for j in range(len(boxes)):
            for k in range(j + 1, len(boxes)):
                overlap_w = min(boxes[j, 2], boxes[k, 2]) - max(boxes[j, 0], boxes[k, 0])
                overlap_h = min(boxes[j, 3], boxes[k, 3]) - max(boxes[j, 1], boxes[k, 1])
                assert overlap_w <= 0 or overlap_h <= 0
    assert counts <= {1, 2, 3, 4, 5} and len(counts) >= 3


def test_whole_image_caption_names_every_object_left_to_right():
    sample = SyntheticImageDataset("image")[3]
    objects = sample.attributes["objects"]
    assert parse_objects(sample.caption) == [{k: o[k] for k in ("size", "colour", "shape")} for o in objects]
    assert [o["box_xyxy_px"][0] for o in objects] == sorted(o["box_xyxy_px"][0] for o in objects)


def test_whole_image_caption_reads_naturally():
    captions = [SyntheticImageDataset("image").caption(i) for i in range(30)]
    two = next(c for c in captions if c.count(" a ") == 1 and " and " in c)
    assert two.startswith("a ") and "," not in two
    assert all(c.startswith("a ") for c in captions)


def test_region_sample_box_and_caption_describe_one_object():
    sample = SyntheticImageDataset("image_region", image_size=112)[5]
    attrs = sample.attributes
    assert sample.modality == "image_region" and sample.box_xyxy.dtype == np.float32
    assert sample.caption == f"a {attrs['size']} {attrs['colour']} {attrs['shape']}"
    np.testing.assert_allclose(sample.box_xyxy * 112, attrs["box_xyxy_px"])
    x1, y1, x2, y2 = (int(v) for v in attrs["box_xyxy_px"])
    patch = sample.image[y1:y2, x1:x2].reshape(-1, 3)
    assert (patch == COLOURS[attrs["colour"]]).all(axis=1).mean() > 0.3


def test_large_shapes_have_larger_boxes_than_small_ones():
    dataset = SyntheticImageDataset("image_region", length=60, image_size=112)
    widths = {"small": [], "large": []}
    for i in range(60):
        a = dataset[i].attributes
        widths[a["size"]].append(a["box_xyxy_px"][2] - a["box_xyxy_px"][0])
    assert max(widths["small"]) < min(widths["large"])


def test_shapes_sit_on_the_grid_of_the_default_vits_patch_centres():
    # 96 px and 8 x 8 cells: the default ViT's 12 px patches, so each shape lies the same way across its patches
    dataset = SyntheticImageDataset("image", length=30, image_size=96)
    centres = set()
    for i in range(30):
        for o in dataset[i].attributes["objects"]:
            x1, y1, x2, y2 = o["box_xyxy_px"]
            centres |= {(x1 + x2) / 2, (y1 + y2) / 2}
    cell = 96 / GRID_CELLS
    # tight pixel boxes: a triangle's apex row may hold no pixel, so a centre can be off by up to 1.5 px (free
    # placement would put centres up to 6 px off)
    assert all(abs((c / cell - 0.5) - round(c / cell - 0.5)) * cell <= 1.5 for c in centres), sorted(centres)
    assert len(centres) >= 5


def test_objects_in_one_grid_column_are_listed_top_to_bottom():
    dataset = SyntheticImageDataset("image", length=200, image_size=96)
    pairs = 0
    for i in range(200):
        objects = dataset[i].attributes["objects"]
        for a, b in zip(objects, objects[1:]):
            ax, bx = (a["box_xyxy_px"][0] + a["box_xyxy_px"][2]) / 2, (b["box_xyxy_px"][0] + b["box_xyxy_px"][2]) / 2
            if abs(ax - bx) < 1:  # one column
                pairs += 1
                assert a["box_xyxy_px"][1] < b["box_xyxy_px"][1]
    assert pairs > 0
