"""regionblip_ros.sync: region arrays find the frame they were computed on, by stamp."""

from types import SimpleNamespace

import pytest

from regionblip_ros.sync import Added, FrameBuffer, stamp_to_ns

MS = 1_000_000  # nanoseconds
SLOP = 50 * MS
JUMP = 2000 * MS


def buffer_of(*stamps_ms: int, capacity: int = 30) -> FrameBuffer:
    frames = FrameBuffer(capacity, JUMP)
    for stamp in stamps_ms:
        frames.add(stamp * MS, f"frame@{stamp}")
    return frames


def test_stamp_to_ns_is_exact_integer_nanoseconds():
    assert stamp_to_ns(SimpleNamespace(sec=1_700_000_123, nanosec=456_789_012)) == 1_700_000_123_456_789_012


def test_a_region_array_gets_the_frame_with_exactly_its_stamp():
    frames = buffer_of(1000, 1033, 1066)
    assert frames.match(1033 * MS, SLOP) == "frame@1033"


def test_exact_match_wins_even_with_zero_slop():
    assert buffer_of(1000, 1033).match(1000 * MS, 0) == "frame@1000"


def test_without_an_exact_stamp_the_nearest_frame_within_slop_is_matched():
    frames = buffer_of(1000, 1033, 1066)
    assert frames.match(1040 * MS, SLOP) == "frame@1033"
    assert frames.match(1060 * MS, SLOP) == "frame@1066"
    assert frames.match(1100 * MS, SLOP) == "frame@1066"  # 34 ms after the newest


def test_a_tie_between_two_frames_goes_to_the_older():
    assert buffer_of(1000, 1040).match(1020 * MS, SLOP) == "frame@1000"


def test_a_stamp_farther_than_slop_from_every_frame_is_unmatched():
    frames = buffer_of(1000, 1200)
    assert frames.match(1100 * MS, SLOP) is None
    assert frames.match(1251 * MS, SLOP) is None
    assert frames.match(949 * MS, SLOP) is None


def test_an_empty_buffer_matches_nothing():
    assert FrameBuffer(5, JUMP).match(1000 * MS, SLOP) is None


def test_the_ring_keeps_only_the_newest_capacity_stamps():
    frames = buffer_of(*range(1000, 1100, 10), capacity=3)
    assert len(frames) == 3
    assert frames.stamps == [1070 * MS, 1080 * MS, 1090 * MS]
    assert frames.match(1000 * MS, SLOP) is None  # evicted: 1070 is 70 ms away


def test_frames_arriving_out_of_order_are_kept_sorted_and_still_matched():
    frames = buffer_of(1066, 1000, 1033)
    assert frames.stamps == [1000 * MS, 1033 * MS, 1066 * MS]
    assert frames.match(1000 * MS, 0) == "frame@1000"


def test_a_late_frame_older_than_a_full_ring_is_not_buffered_and_says_so():
    frames = buffer_of(1100, 1200, 1300, capacity=3)
    assert frames.add(1000 * MS, "late") is Added.TOO_OLD
    assert frames.stamps == [1100 * MS, 1200 * MS, 1300 * MS]


def test_a_late_frame_that_fits_a_full_ring_evicts_the_oldest():
    frames = buffer_of(1100, 1200, 1300, capacity=3)
    assert frames.add(1150 * MS, "late") is Added.KEPT
    assert frames.stamps == [1150 * MS, 1200 * MS, 1300 * MS]


def test_a_second_frame_with_the_same_stamp_replaces_the_first():
    frames = buffer_of(1000)
    assert frames.add(1000 * MS, "again") is Added.REPLACED
    assert len(frames) == 1
    assert frames.match(1000 * MS, 0) == "again"


def test_a_clock_jump_back_restarts_the_buffer_so_the_frames_after_it_are_matched():
    frames = buffer_of(*range(100_000, 101_000, 33), capacity=30)  # a full ring, then the bag loops to t = 0
    assert frames.add(0, "frame@0") is Added.RESET
    assert frames.stamps == [0]
    for stamp in range(33, 330, 33):
        assert frames.add(stamp * MS, f"frame@{stamp}") is Added.KEPT
    assert frames.match(297 * MS, 0) == "frame@297"


def test_after_many_future_stamped_frames_the_first_real_frame_restarts_the_buffer():
    frames = buffer_of(*[10**9 + i for i in range(40)], capacity=30)  # 11 days ahead, 40 of them
    assert frames.add(1000 * MS, "frame@1000") is Added.RESET
    frames.add(1033 * MS, "frame@1033")
    assert frames.match(1033 * MS, 0) == "frame@1033"


def test_a_frame_back_by_no_more_than_the_jump_threshold_is_an_out_of_order_frame():
    frames = buffer_of(5000)
    assert frames.add(3000 * MS, "frame@3000") is Added.KEPT
    assert frames.stamps == [3000 * MS, 5000 * MS]


def test_a_buffer_must_hold_at_least_one_frame():
    with pytest.raises(ValueError, match="frame_buffer >= 1"):
        FrameBuffer(0, JUMP)


def test_the_jump_threshold_must_be_positive():
    with pytest.raises(ValueError, match="clock_jump > 0"):
        FrameBuffer(5, 0)
