"""regionblip_ros.description_cache: when a tracked region is served its earlier description, and when not."""

import numpy as np
import pytest

from contract.boxes import box_corners, yaw_to_matrix
from regionblip_ros.description_cache import (
    CLOCK_BACK, EXPIRED, HIT, MOVED, NEW, NO_ID, PROMPT, REFRESH, DescriptionCache, box_iou,
)

S = 1_000_000_000  # ns per second
KEY = ("image_region", "camera_optical", "det-7")
BOX = np.array([10.0, 10.0, 30.0, 30.0])  # 20 x 20 px


def cache_holding(box=BOX, key=KEY, prompt="", stamp_ns=100 * S, **settings) -> DescriptionCache:
    cache = DescriptionCache(**{"iou_threshold": 0.7, "ttl_s": 2.0, "max_entries": 16, **settings})
    cache.store(key, box, prompt, stamp_ns, "a red circle", -0.25)
    return cache


def cube(center, size=(1.0, 1.0, 1.0), yaw=0.0) -> np.ndarray:
    return box_corners(np.array([center], float), np.array([size], float), yaw_to_matrix(np.array([yaw])))[0]


# --- IoU ------------------------------------------------------------------------------------------------------

def test_2d_iou_is_intersection_over_union_of_pixel_boxes():
    assert box_iou(BOX, BOX) == 1.0
    assert box_iou(BOX, BOX + [10, 0, 10, 0]) == pytest.approx(200 / 600)  # half overlap: 10x20 of 3 x 10x20
    assert box_iou(BOX, BOX + [40, 0, 40, 0]) == 0.0


def test_3d_iou_compares_the_axis_aligned_bounds_of_the_corners():
    assert box_iou(cube((0, 0, 0)), cube((0, 0, 0))) == pytest.approx(1.0)
    assert box_iou(cube((0, 0, 0)), cube((0.5, 0, 0))) == pytest.approx(0.5 / 1.5)
    assert box_iou(cube((0, 0, 0), size=(2, 1, 1)), cube((0, 0, 0), size=(1, 1, 1))) == pytest.approx(0.5)


def test_3d_iou_sees_a_turn_that_moves_the_bounds_and_not_one_that_keeps_them():
    long = (2.0, 1.0, 1.0)
    assert box_iou(cube((0, 0, 0), long), cube((0, 0, 0), long, yaw=np.pi / 2)) == pytest.approx(1 / 3)
    assert box_iou(cube((0, 0, 0)), cube((0, 0, 0), yaw=np.pi / 2)) == pytest.approx(1.0)


def test_boxes_without_area_match_only_themselves():
    flat = np.array([5.0, 5.0, 5.0, 9.0])
    assert box_iou(flat, flat) == 1.0
    assert box_iou(flat, flat + 1) == 0.0


def test_a_2d_box_is_not_compared_with_a_3d_one():
    with pytest.raises(ValueError, match="cannot compare a 2-D box with a 3-D box"):
        box_iou(BOX, cube((0, 0, 0)))


# --- hit and miss rules ---------------------------------------------------------------------------------------

def test_the_same_id_prompt_and_box_within_the_ttl_is_a_hit_with_the_stored_text():
    entry, outcome = cache_holding().lookup(KEY, BOX + 0.5, "", 101 * S)
    assert outcome == HIT
    assert (entry.text, entry.score, entry.stamp_ns) == ("a red circle", -0.25, 100 * S)


@pytest.mark.parametrize(("shift", "outcome"), [(1.0, HIT), (3.0, MOVED)])
def test_a_box_that_moved_below_the_iou_threshold_is_a_miss(shift, outcome):
    # 20 px boxes 1 px apart overlap at IoU 19/21 = 0.90; 3 px apart at 17/23 = 0.74 < 0.8
    moved = BOX + [shift, 0, shift, 0]
    assert cache_holding(iou_threshold=0.8).lookup(KEY, moved, "", 101 * S)[1] == outcome


@pytest.mark.parametrize(("age_s", "outcome"), [(0.0, HIT), (2.0, HIT), (2.001, EXPIRED)])
def test_an_entry_older_than_the_ttl_is_a_miss(age_s, outcome):
    assert cache_holding().lookup(KEY, BOX, "", 100 * S + round(age_s * S))[1] == outcome


def test_a_frame_stamped_before_the_entry_is_a_miss():
    assert cache_holding().lookup(KEY, BOX, "", 99 * S)[1] == CLOCK_BACK


def test_another_prompt_is_a_miss():
    cache = cache_holding(prompt="Question: what colour is it? Answer:")
    assert cache.lookup(KEY, BOX, "", 101 * S)[1] == PROMPT
    assert cache.lookup(KEY, BOX, "Question: what colour is it? Answer:", 101 * S)[1] == HIT


def test_a_refresh_is_a_miss_however_fresh_the_entry():
    assert cache_holding().lookup(KEY, BOX, "", 100 * S, refresh=True)[1] == REFRESH


def test_another_id_frame_or_sensor_is_a_miss():
    cache = cache_holding()
    for key in [("image_region", "camera_optical", "det-8"), ("image_region", "camera_left", "det-7"),
                ("pointcloud_region", "camera_optical", "det-7")]:
        assert cache.lookup(key, BOX, "", 101 * S)[1] == NEW


def test_an_empty_id_is_never_stored_nor_served():
    cache = cache_holding(key=("image_region", "camera_optical", ""))
    assert len(cache) == 0
    assert cache.lookup(("image_region", "camera_optical", ""), BOX, "", 101 * S)[1] == NO_ID


def test_age_and_iou_are_measured_against_the_description_not_the_last_hit():
    cache = cache_holding(iou_threshold=0.8)
    for step in range(1, 3):  # 1 px per frame: each frame within 0.9 of the one before
        assert cache.lookup(KEY, BOX + [step, 0, step, 0], "", 100 * S + step * S // 2)[1] == HIT
    assert cache.lookup(KEY, BOX + [3, 0, 3, 0], "", 101 * S + S // 2)[1] == MOVED
    assert cache.lookup(KEY, BOX, "", 102 * S + 1)[1] == EXPIRED


def test_a_fresh_description_replaces_the_entry():
    cache = cache_holding()
    cache.store(KEY, BOX + 5, "", 103 * S, "a blue square", -0.5)
    entry, outcome = cache.lookup(KEY, BOX + 5, "", 104 * S)
    assert (outcome, entry.text, entry.stamp_ns) == (HIT, "a blue square", 103 * S)
    assert len(cache) == 1


def test_3d_regions_hit_while_their_box_jitters_and_miss_once_it_moves():
    key = ("pointcloud_region", "lidar", "l-0")
    cache = cache_holding(box=cube((1.0, 2.0, 0.5)), key=key)
    assert cache.lookup(key, cube((1.02, 1.98, 0.51)), "", 101 * S)[1] == HIT
    assert cache.lookup(key, cube((1.4, 2.0, 0.5)), "", 101 * S)[1] == MOVED


# --- the bound ------------------------------------------------------------------------------------------------

def test_beyond_max_entries_the_least_recently_used_is_evicted():
    cache = DescriptionCache(iou_threshold=0.7, ttl_s=2.0, max_entries=2)
    keys = [("image_region", "cam", f"det-{i}") for i in range(3)]
    cache.store(keys[0], BOX, "", 100 * S, "first", -1.0)
    cache.store(keys[1], BOX, "", 100 * S, "second", -1.0)
    assert cache.lookup(keys[0], BOX, "", 100 * S)[1] == HIT  # det-0 used last: det-1 goes first
    cache.store(keys[2], BOX, "", 100 * S, "third", -1.0)
    assert len(cache) == 2
    assert [cache.lookup(key, BOX, "", 100 * S)[1] for key in keys] == [HIT, NEW, HIT]
    assert cache.counts()["evicted"] == 1


def test_counts_say_hits_and_each_reason_for_a_miss():
    cache = cache_holding()
    cache.lookup(KEY, BOX, "", 101 * S)
    cache.lookup(KEY, BOX, "", 101 * S, refresh=True)
    cache.lookup(("image_region", "camera_optical", "other"), BOX, "", 101 * S)
    counts = cache.counts()
    assert (counts["hits"], counts["misses"], counts["misses: refresh"], counts["misses: new"]) == (1, 2, 1, 1)
    assert (counts["misses: moved"], counts["evicted"], counts["entries"]) == (0, 0, 1)


@pytest.mark.parametrize(("settings", "says"), [
    ({"iou_threshold": 1.5}, "cache IoU threshold 1.5: give a value from 0 to 1"),
    ({"ttl_s": -1.0}, "cache TTL -1.0 s: give 0 or more seconds"),
    ({"max_entries": 0}, "cache size 0: give at least 1 entry"),
])
def test_settings_out_of_range_are_refused_with_what_to_give(settings, says):
    with pytest.raises(ValueError, match=says):
        DescriptionCache(**{"iou_threshold": 0.7, "ttl_s": 2.0, "max_entries": 16, **settings})
