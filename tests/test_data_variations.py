"""Variations of the synthetic world (training/data/variations.py): each changes what it names and nothing else, the
clean world stays as it was, and no background takes an object's colour."""

import numpy as np
import pytest

from training.data.backgrounds import MIN_COLOUR_DISTANCE, colour_distance, paint
from training.data.synthetic_images import GRID_CELLS, SyntheticImageDataset
from training.data.synthetic_points import SyntheticPointDataset
from training.data.variations import (BACKGROUND_KINDS, BOX_JITTER, FRAME_ASPECT, VARIATIONS, Variation,
                                      get_variation)
from training.data.vocabulary import COLOURS
from training.trainer_config import TrainConfigError, parse_train_config
from training.vision_pretraining import NO_OBJECT, patch_targets

from test_train import tiny_recipe


def images(variation, modality="image", n=30, size=96):
    dataset = SyntheticImageDataset(modality, "eval", 1000, image_size=size, variation=variation)
    return [dataset[i] for i in range(n)]


def clouds(variation, modality="pointcloud_region", n=20):
    dataset = SyntheticPointDataset(modality, "eval", 1000, num_points=1024, variation=variation)
    return [dataset[i] for i in range(n)]


def test_the_clean_variation_is_the_world_the_generators_always_drew():
    for default, clean in zip(images("clean"), [SyntheticImageDataset("image", "eval", 1000, 96)[i] for i in range(30)]):
        assert np.array_equal(default.image, clean.image) and default.caption == clean.caption
    for a, b in zip(clouds("clean"), [SyntheticPointDataset("pointcloud_region", "eval", 1000, 1024)[i]
                                      for i in range(20)]):
        assert np.array_equal(a.points, b.points) and np.array_equal(a.corners, b.corners)


@pytest.mark.parametrize("kind", [k for k in BACKGROUND_KINDS if k != "light"])
def test_a_background_variation_keeps_the_scene_and_changes_only_the_ground(kind):
    for clean, varied in zip(images("clean", "image_region"), images(kind, "image_region")):
        assert varied.caption == clean.caption and np.array_equal(varied.box_xyxy, clean.box_xyxy)
        assert varied.attributes["background"] == kind
        shape = (clean.image == COLOURS[clean.attributes["colour"]]).all(axis=2)
        assert np.array_equal(shape, (varied.image == COLOURS[clean.attributes["colour"]]).all(axis=2))


@pytest.mark.parametrize("kind", BACKGROUND_KINDS)
def test_no_background_comes_as_close_to_an_object_colour_as_two_object_colours_are(kind):
    rng = np.random.default_rng(0)
    for _ in range(40):
        ground = paint(kind, rng, 24, 32)
        assert ground.shape == (24, 32, 3)
        # pixel noise scatters single pixels; the ground's own colours (its median per column band) obey the rule
        bands = np.median(ground.reshape(24, 4, 8, 3), axis=(0, 2))
        if kind in ("light", "white", "black", "dark_grey", "grey", "saturated"):
            assert all(colour_distance(c) >= MIN_COLOUR_DISTANCE for c in bands)
        assert np.mean([colour_distance(p) >= MIN_COLOUR_DISTANCE / 2 for p in ground.reshape(-1, 3)]) > 0.99


def test_the_colour_rule_is_the_distance_of_the_two_closest_object_colours():
    rgb = np.array(list(COLOURS.values()), dtype=float)
    gaps = [np.linalg.norm(a - b) for i, a in enumerate(rgb) for b in rgb[i + 1:]]
    assert MIN_COLOUR_DISTANCE == pytest.approx(min(gaps)) and 60 < MIN_COLOUR_DISTANCE < 80


def test_off_grid_shapes_leave_the_patch_centres():
    offsets = []
    for sample in images("off_grid"):
        for o in sample.attributes["objects"]:
            x1, _, x2, _ = o["box_xyxy_px"]
            cell = 96 / GRID_CELLS
            offsets.append(abs(((x1 + x2) / 2 / cell - 0.5) - round((x1 + x2) / 2 / cell - 0.5)) * cell)
    assert max(offsets) > 4 and np.mean(offsets) > 2  # a grid scene's centres are within 1.5 px


def test_overlapping_shapes_touch_yet_every_shape_shows_at_its_centre():
    overlapping = 0
    for sample in images("overlap", n=60):
        objects = sample.attributes["objects"]
        boxes = np.array([o["box_xyxy_px"] for o in objects])
        for j in range(len(boxes)):
            x1, y1, x2, y2 = boxes[j]
            centre = sample.image[int((y1 + y2) / 2), int((x1 + x2) / 2)]
            assert (centre == COLOURS[objects[j]["colour"]]).all()
            for k in range(j + 1, len(boxes)):
                overlapping += (min(boxes[j, 2], boxes[k, 2]) > max(boxes[j, 0], boxes[k, 0])
                                and min(boxes[j, 3], boxes[k, 3]) > max(boxes[j, 1], boxes[k, 1]))
    assert overlapping >= 5


def test_loose_and_tight_boxes_stay_within_the_jitter_of_the_true_box():
    grew = shrank = 0
    for sample in images("loose_tight_boxes", "image_region", n=40):
        true = np.array(sample.attributes["box_xyxy_px"])
        given = sample.box_xyxy * 96
        np.testing.assert_allclose(given, sample.attributes["given_box_xyxy_px"], rtol=1e-5)
        side = np.array([true[2] - true[0], true[3] - true[1]] * 2)
        assert (np.abs(given - true) <= BOX_JITTER * side + 1e-4).all()
        area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
        grew, shrank = grew + (area(given) > area(true)), shrank + (area(given) < area(true))
    assert grew >= 5 and shrank >= 5


def test_frames_of_other_sizes_keep_boxes_normalised_by_their_own_width_and_height():
    aspects = []
    for sample in images("frame_size", "image_region", n=40):
        height, width = sample.image.shape[:2]
        aspects.append(width / height)
        x1, y1, x2, y2 = (sample.box_xyxy * [width, height, width, height]).round().astype(int)
        inside = (sample.image[y1:y2, x1:x2] == COLOURS[sample.attributes["colour"]]).all(axis=2)
        assert inside.mean() > 0.3
    assert min(aspects) >= FRAME_ASPECT[0] - 0.05 and max(aspects) <= FRAME_ASPECT[1] + 0.05
    assert min(aspects) < 0.8 and max(aspects) > 1.25


def test_patch_targets_split_each_axis_of_a_wide_frame_into_the_grid():
    objects = [[{"shape": "circle", "colour": "red", "size": "small", "box_xyxy_px": [180, 10, 190, 20]}]]
    targets = patch_targets(objects, [(48, 192)], grid=4)  # centre (185, 15): column 3, row 1
    assert targets[0, 0, 1 * 4 + 3] > NO_OBJECT and (targets[0, 0] > NO_OBJECT).sum() == 1


def object_points(sample) -> np.ndarray:
    """The points inside the sample's box (its corners' hull, as an oriented box)."""
    corners = sample.corners.astype(np.float64)
    origin, axes = corners[0], np.stack([corners[1] - corners[0], corners[3] - corners[0], corners[4] - corners[0]])
    local = np.linalg.solve(axes.T, (sample.points - origin).T).T
    return ((local >= -0.02) & (local <= 1.02)).all(axis=1)


@pytest.mark.parametrize("name", ["ground_height", "tilt"])
def test_a_moved_or_tilted_ground_carries_the_box_with_its_object(name):
    clean, moved = clouds("clean"), clouds(name)
    lowest = [np.percentile(s.points[:, 2], 5) for s in moved]
    assert np.ptp(lowest) > 0.2  # the ground is no longer at z = 0 in every scene
    for a, b in zip(clean, moved):
        assert a.caption == b.caption
        assert object_points(b).sum() >= 0.6 * object_points(a).sum() > 0


def test_clutter_sparse_clouds_and_noise_change_the_points_but_not_the_count_or_caption():
    clean = clouds("clean")
    for name in ("clutter", "density", "sensor_noise"):
        for a, b in zip(clean, clouds(name)):
            assert b.points.shape == (1024, 3) and b.caption == a.caption and not np.array_equal(a.points, b.points)
    repeats = [1024 - len(np.unique(s.points, axis=0)) for s in clouds("density")]
    assert min(repeats) > 300  # at most 40 % of the drawn points survive: the rest of the 1024 repeat
    airborne = lambda samples: np.mean([(s.points[:, 2] > 0.05).mean() - object_points(s).mean()  # noqa: E731
                                        for s in samples])
    assert airborne(clouds("clutter")) > airborne(clean)


def test_object_clouds_stay_on_the_unit_sphere_under_every_variation():
    for name in ("clutter", "tilt", "density", "sensor_noise", "varied"):
        for sample in clouds(name, "pointcloud", n=5):
            radius = np.linalg.norm(sample.points - sample.points.mean(axis=0), axis=1).max()
            assert radius == pytest.approx(1.0, abs=1e-4)


def test_an_unknown_variation_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="unknown variation 'snow'.*clean, white"):
        get_variation("snow")
    with pytest.raises(ValueError, match="backgrounds"):
        Variation(backgrounds=("plaid",))
    with pytest.raises(ValueError, match="probability"):
        Variation(off_grid=1.5)


def test_a_training_task_names_its_variation_and_a_wrong_one_stops_the_config(tmp_path):
    recipe = tiny_recipe(tmp_path)
    recipe["stages"][0]["tasks"][0]["variation"] = "varied"
    assert parse_train_config(recipe).stages[0].tasks[0].variation == "varied"
    recipe["stages"][0]["tasks"][0]["variation"] = "snowy"
    with pytest.raises(TrainConfigError, match=r"tasks\[0\].variation is 'snowy'"):
        parse_train_config(recipe)


def test_every_variation_but_clean_changes_some_modality():
    modalities = ("image", "image_region", "pointcloud", "pointcloud_region")
    for name, variation in VARIATIONS.items():
        assert any(variation.changes(m) for m in modalities) == (name != "clean"), name
