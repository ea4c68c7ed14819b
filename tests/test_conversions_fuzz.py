"""Fuzz of regionblip_ros.conversions, followed through the runtime's checks, with extreme values.

Finite extremes (1e38, ±3.4e38, 1e300, float64's largest, subnormals, -0.0), NaN and inf in every float; sizes,
steps and offsets up to uint32's limit in every header. The properties:
  * a conversion returns, or raises ValueError with a message: never another exception, never a numpy warning
    (they are errors here), never a silently wrong value;
  * a region reader marks each unreadable region with a NaN row and its reason and reads the others exactly;
  * after the runtime's checks (runtime/preprocess.py, contract/boxes.py) every row is usable, finite float32,
    or has a problem; a cloud's points are finite float32 however far they were.
Layouts are fuzzed in tests/test_conversions.py; here the values are.
"""

import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from regionblip_msgs.msg import Region2D
from sensor_msgs.msg import Image, PointCloud2, PointField

from contract.boxes import MIN_QUATERNION_NORM
from regionblip_ros.conversions import (
    image_to_numpy,
    numpy_to_image,
    pointcloud2_to_xyz,
    region2d_to_xyxy,
    region3d_to_corners,
    xyz_to_pointcloud2,
)
from runtime.preprocess import check_corners, clean_points, preprocess_boxes, preprocess_object, preprocess_scene
from tests.test_conversions import ENCODINGS, raw_cloud, region3d

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings("error")]

FUZZ = settings(max_examples=150, deadline=None)
FUZZ_HEADERS = settings(max_examples=400, deadline=None)  # most fuzzed headers are refused: more, so some read
UINT32_MAX = 2**32 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
EXTREME_FINITE = [0.0, -0.0, 1.0, -2.5, 1e38, -1e38, 3.4e38, -3.4e38, FLOAT32_MAX, -FLOAT32_MAX, 3.5e38, 1e39,
                  1e300, -1e300, sys.float_info.max, -sys.float_info.max, 5e-324, -5e-324, 1e-310, 1e-45, -1e-45,
                  sys.float_info.min]
NON_FINITE = [math.nan, math.inf, -math.inf]

values = st.one_of(st.sampled_from(EXTREME_FINITE + NON_FINITE), st.floats())
counts = st.one_of(st.integers(0, 12), st.sampled_from([2**31 - 1, 2**31, UINT32_MAX - 3, UINT32_MAX]),
                   st.integers(0, UINT32_MAX))


def returns_or_refuses(convert, *args):
    """convert(*args), or None when it raised a ValueError with a message (anything else fails the test)."""
    try:
        return convert(*args)
    except ValueError as error:
        assert str(error), f"{convert.__name__} raised a ValueError without a message"
        return None


def as_float32(values) -> np.ndarray:
    """The nearest float32 of each value, inf beyond float32's range: what a float32 reader must return."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(np.float32)


def assert_same_floats(actual, expected):
    """Equal value for value, NaN where NaN, and the same sign of zero."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_array_equal(actual, expected)
    assert (np.signbit(actual) == np.signbit(expected)).all(), "the sign of a zero was lost"


def quaternion_length(q) -> float:
    """|q| without overflow or underflow on the way, independently of the code under test."""
    largest = max(abs(c) for c in q)
    return largest * math.hypot(*(c / largest for c in q)) if largest else 0.0


# --- images ------------------------------------------------------------------------------------------------

CHANNEL_ORDER = {"rgb8": (3, (0, 1, 2)), "bgr8": (3, (2, 1, 0)), "rgba8": (4, (0, 1, 2)), "bgra8": (4, (2, 1, 0)),
                 "mono8": (1, (0, 0, 0))}


@st.composite
def image_messages(draw):
    """A readable image of a few pixels, with some of its header fields set to any value the type allows."""
    encoding = draw(st.sampled_from(ENCODINGS))
    height, width = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    step = width * CHANNEL_ORDER[encoding][0] + draw(st.integers(0, 3))
    data = draw(st.one_of(st.binary(min_size=step * height, max_size=step * height + 2), st.binary(max_size=64)))
    header = {"height": height, "width": width, "step": step, "encoding": encoding}
    for name in draw(st.sets(st.sampled_from(sorted(header)))):
        header[name] = draw(st.text(max_size=8) if name == "encoding" else counts)
    return Image(**header, is_bigendian=draw(st.integers(0, 1)), data=data)


@FUZZ_HEADERS
@given(msg=image_messages())
def test_image_to_numpy_returns_the_pixels_byte_for_byte_or_refuses(msg):
    pixels = returns_or_refuses(image_to_numpy, msg)
    if pixels is None:
        return
    channels, order = CHANNEL_ORDER[msg.encoding]
    data = bytes(msg.data)
    expected = [[[data[row * msg.step + column * channels + k] for k in order] for column in range(msg.width)]
                for row in range(msg.height)]
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, np.array(expected, dtype=np.uint8).reshape(msg.height, msg.width, 3))


@FUZZ
@given(array=arrays(st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.bool_]),
                    st.lists(st.integers(0, 4), max_size=4).map(tuple)),
       encoding=st.sampled_from(ENCODINGS + ["16UC1"]))
def test_numpy_to_image_writes_what_image_to_numpy_reads_or_refuses(array, encoding):
    msg = returns_or_refuses(numpy_to_image, array, encoding)
    if msg is None:
        return
    channels, order = CHANNEL_ORDER[encoding]
    hwc = array.reshape(msg.height, msg.width, channels)
    if hwc.size == 0:
        with pytest.raises(ValueError, match="image is empty"):
            image_to_numpy(msg)
    else:
        np.testing.assert_array_equal(image_to_numpy(msg), hwc[..., list(order)])


# --- point clouds ------------------------------------------------------------------------------------------

XYZ_FORMATS = st.sampled_from([PointField.FLOAT32, PointField.FLOAT64])


@st.composite
def extreme_clouds(draw):
    """(message, its points as a float32 reader must see them) with extreme, NaN and inf coordinates."""
    datatypes = [draw(XYZ_FORMATS) for _ in "xyz"]
    fields, offset = [], 0
    for name, datatype in zip("xyz", datatypes):
        fields.append((name, offset, datatype))
        offset += 4 if datatype == PointField.FLOAT32 else 8
    height, width = draw(st.integers(1, 3)), draw(st.integers(0, 5))
    points = np.array(draw(st.lists(values, min_size=3 * height * width, max_size=3 * height * width)),
                      dtype=np.float64).reshape(-1, 3)
    for column, datatype in enumerate(datatypes):
        if datatype == PointField.FLOAT32:  # a FLOAT32 field holds the float32 of the value (inf beyond range)
            points[:, column] = as_float32(points[:, column])
    message = raw_cloud(points, fields, point_step=offset, is_bigendian=draw(st.booleans()), height=height)
    return message, points


@FUZZ
@given(case=extreme_clouds())
def test_a_cloud_reads_as_its_points_finite_in_float32_and_nothing_else(case):
    message, points = case
    in_float32 = as_float32(points)
    expected = in_float32[np.isfinite(in_float32).all(axis=1)]
    xyz = pointcloud2_to_xyz(message)
    assert xyz.dtype == np.float32 and np.isfinite(xyz).all()
    assert_same_floats(xyz, expected)


@FUZZ
@given(case=extreme_clouds())
def test_what_reaches_the_point_graphs_is_finite_float32_or_refused(case):
    message, points = case
    for cloud in (pointcloud2_to_xyz(message), points):  # as the node passes it, and as a float64 caller does
        cleaned = returns_or_refuses(clean_points, cloud)
        if cleaned is None:
            assert not np.isfinite(as_float32(points)).all(axis=1).any()
            continue
        assert cleaned.dtype == np.float32 and np.isfinite(cleaned).all()
        assert_same_floats(cleaned, pointcloud2_to_xyz(message))
        for graph_input in (preprocess_scene(cloud, 16), preprocess_object(cloud, 16)):
            assert graph_input.dtype == np.float32 and graph_input.shape == (16, 3) and np.isfinite(graph_input).all()


@st.composite
def cloud_headers(draw):
    """A readable cloud of a few points (x, y, z and intensity in any order, packed), with some of its header and
    field values set to any value the types allow."""
    fields, offset = [], 0
    for name in draw(st.permutations(["x", "y", "z", "intensity"])):
        datatype = draw(XYZ_FORMATS)
        fields.append(PointField(name=name, offset=offset, datatype=datatype, count=1))
        offset += 4 if datatype == PointField.FLOAT32 else 8
    height, width = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    header = {"height": height, "width": width, "point_step": offset, "row_step": offset * width}
    data = draw(st.one_of(st.binary(min_size=offset * width * height, max_size=offset * width * height + 2),
                          st.binary(max_size=64)))
    for name in draw(st.sets(st.sampled_from(sorted(header)))):
        header[name] = draw(counts)
    for field in draw(st.lists(st.sampled_from(fields), unique_by=id)):
        field.offset, field.datatype, field.count = draw(counts), draw(st.integers(0, 255)), draw(counts)
    return PointCloud2(**header, fields=fields, is_bigendian=draw(st.booleans()), data=data)


@FUZZ_HEADERS
@given(msg=cloud_headers())
def test_any_cloud_header_gives_finite_float32_points_or_a_value_error(msg):
    xyz = returns_or_refuses(pointcloud2_to_xyz, msg)
    if xyz is None:
        return
    assert xyz.dtype == np.float32 and xyz.ndim == 2 and xyz.shape[1] == 3
    assert np.isfinite(xyz).all() and len(xyz) <= msg.height * msg.width


@FUZZ
@given(points=st.one_of(arrays(np.float64, st.tuples(st.integers(0, 6), st.just(3)), elements=values),
                        arrays(np.float64, st.lists(st.integers(0, 4), max_size=3).map(tuple), elements=values)))
def test_xyz_to_pointcloud2_writes_points_the_reader_gives_back_or_refuses(points):
    message = returns_or_refuses(xyz_to_pointcloud2, points)
    if message is None:
        assert not (points.ndim == 2 and points.shape[1] == 3)
        return
    in_float32 = as_float32(points)
    finite = np.isfinite(in_float32).all(axis=1)
    assert message.is_dense == finite.all()
    assert_same_floats(pointcloud2_to_xyz(message), in_float32[finite])


def test_a_point_beyond_float32_is_written_as_inf_and_read_back_as_missing():
    message = xyz_to_pointcloud2(np.array([[1e39, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    assert not message.is_dense
    np.testing.assert_array_equal(pointcloud2_to_xyz(message), [[1, 2, 3]])


# --- 2D regions --------------------------------------------------------------------------------------------

regions_2d = st.lists(st.builds(Region2D, x=values, y=values, width=values, height=values), max_size=6)


@FUZZ
@given(regions=regions_2d)
def test_region2d_reader_marks_each_unreadable_region_and_reads_the_others_exactly(regions):
    boxes, problems = region2d_to_xyxy(regions)
    assert boxes.dtype == np.float32 and boxes.shape == (len(regions), 4)
    for row, region in enumerate(regions):
        x, y, width, height = region.x, region.y, region.width, region.height
        if not all(map(math.isfinite, (x, y, width, height))):
            assert problems[row] == "x, y, width or height has NaN or inf values"
            assert np.isnan(boxes[row]).all()
        else:
            assert row not in problems
            assert_same_floats(boxes[row], as_float32([x, y, x + width, y + height]))


@FUZZ
@given(regions=regions_2d,
       image_hw=st.tuples(*[st.one_of(st.integers(1, 4096), st.sampled_from([2**31 - 1, UINT32_MAX]))] * 2),
       min_size_px=st.sampled_from([0.0, 4.0, 1e38]))
def test_after_the_runtime_checks_every_2d_row_is_a_unit_box_or_a_problem(regions, image_hw, min_size_px):
    boxes, unreadable = region2d_to_xyxy(regions)
    normalised, problems = preprocess_boxes(boxes, (*image_hw, 3), min_size_px)
    assert normalised.dtype == np.float32 and normalised.shape == (len(regions), 4)
    assert np.isfinite(normalised).all()
    assert set(unreadable) <= set(problems) and all(isinstance(p, str) and p for p in problems.values())
    for row in set(range(len(regions))) - set(problems):
        x1, y1, x2, y2 = normalised[row]
        assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1, (regions[row], normalised[row])


# --- 3D regions --------------------------------------------------------------------------------------------

@st.composite
def regions_3d(draw):
    def three(strategy):
        return tuple(draw(strategy) for _ in range(3))

    return [region3d(f"r{k}", position=three(values), quaternion=three(values) + (draw(values),), size=three(values))
            for k in range(draw(st.integers(0, 5)))]


def region3d_values(region) -> tuple[list[float], list[float], list[float]]:
    pose = region.center
    return ([pose.position.x, pose.position.y, pose.position.z],
            [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w],
            [region.size.x, region.size.y, region.size.z])


@FUZZ
@given(regions=regions_3d())
def test_region3d_reader_marks_each_unreadable_region_and_reads_the_others_alone_alike(regions):
    corners, problems = region3d_to_corners(regions)
    assert corners.dtype == np.float32 and corners.shape == (len(regions), 8, 3)
    for row, region in enumerate(regions):
        center, quaternion, size = region3d_values(region)
        if not all(map(math.isfinite, center + quaternion + size)):
            assert problems[row].endswith("has NaN or inf values")
        elif quaternion_length(quaternion) < MIN_QUATERNION_NORM:
            assert problems[row].startswith("center.orientation is a zero quaternion")
        elif min(size) < 0:
            assert problems[row].startswith(f"size {size} is negative")
        else:
            assert row not in problems
            assert not np.isnan(corners[row]).any()  # inf, beyond float32, is for the runtime to refuse
            assert_same_floats(corners[row], region3d_to_corners([region])[0][0])
            continue
        assert np.isnan(corners[row]).all()


@FUZZ
@given(regions=regions_3d())
def test_after_the_runtime_checks_every_3d_row_is_finite_corners_or_a_problem(regions):
    corners, unreadable = region3d_to_corners(regions)
    checked, problems = check_corners(corners)
    assert checked.dtype == np.float32 and checked.shape == (len(regions), 8, 3) and np.isfinite(checked).all()
    assert set(unreadable) <= set(problems) and all(isinstance(p, str) and p for p in problems.values())
    usable = sorted(set(range(len(regions))) - set(problems))
    assert_same_floats(checked[usable], corners[usable])


@FUZZ
@given(direction=st.tuples(*[st.floats(-1, 1)] * 4).filter(lambda q: quaternion_length(q) > 0.5),
       scale=st.one_of(st.sampled_from([1e-5, 1e38, 3.4e38, 1e154, 1e200, 1e300, sys.float_info.max / 2]),
                       st.floats(1e-5, sys.float_info.max / 2)))
def test_a_quaternion_of_any_finite_length_gives_the_box_of_its_unit_quaternion(direction, scale):
    unit = region3d(position=(1.0, -2.0, 0.5), quaternion=direction, size=(2.0, 4.0, 6.0))
    scaled = region3d(position=(1.0, -2.0, 0.5), quaternion=tuple(c * scale for c in direction), size=(2.0, 4.0, 6.0))
    corners, problems = region3d_to_corners([scaled, unit])
    assert problems == {}
    np.testing.assert_allclose(corners[0], corners[1], atol=1e-5)


def test_a_quaternion_too_long_to_square_in_float64_is_normalised_not_refused():
    corners, problems = region3d_to_corners([region3d(quaternion=(1e300, 0.0, 0.0, 0.0), size=(2.0, 4.0, 6.0))])
    half_turn_about_x = region3d_to_corners([region3d(quaternion=(1.0, 0.0, 0.0, 0.0), size=(2.0, 4.0, 6.0))])[0]
    assert problems == {}
    np.testing.assert_array_equal(corners, half_turn_about_x)
