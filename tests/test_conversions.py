"""regionblip_ros.conversions: every Image and PointCloud2 layout the message definitions allow, and regions."""

import math
import struct

import numpy as np
import pytest
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from regionblip_msgs.msg import Region2D, Region3D
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header

from regionblip_ros.conversions import (
    image_to_numpy,
    numpy_to_image,
    pointcloud2_to_xyz,
    region2d_to_xyxy,
    region3d_to_corners,
    xyz_to_pointcloud2,
)
from contract.boxes import box_corners, yaw_to_matrix

pytestmark = pytest.mark.ros

ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"]
SUPPORTED = "rgb8, bgr8, rgba8, bgra8, mono8"


# --- images ------------------------------------------------------------------------------------------------


def raw_image(rows: np.ndarray, encoding: str, pad: int, fill: int = 0xEE, is_bigendian: int = 0) -> Image:
    """An Image whose rows are the (H, W, C) uint8 `rows` followed by `pad` bytes of `fill`."""
    height, width, channels = rows.shape
    step = width * channels + pad
    data = np.full((height, step), fill, dtype=np.uint8)
    data[:, : width * channels] = rows.reshape(height, -1)
    return Image(height=height, width=width, encoding=encoding, is_bigendian=is_bigendian, step=step,
                 data=data.tobytes())


@st.composite
def images(draw):
    """(message, expected RGB) for a random encoding, size, row padding, byte-order flag and padding bytes."""
    encoding = draw(st.sampled_from(ENCODINGS))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    if encoding == "mono8":
        gray = draw(arrays(np.uint8, (height, width, 1)))
        rows, rgb = gray, np.repeat(gray, 3, axis=2)
    else:
        rgb = draw(arrays(np.uint8, (height, width, 3)))
        rows = rgb if encoding.startswith("rgb") else rgb[..., ::-1]
        if encoding.endswith("a8"):
            rows = np.concatenate([rows, draw(arrays(np.uint8, (height, width, 1)))], axis=2)
    message = raw_image(rows, encoding, pad=draw(st.integers(0, 7)), fill=draw(st.integers(0, 255)),
                        is_bigendian=draw(st.sampled_from([0, 1])))
    return message, rgb


@settings(max_examples=200, deadline=None)
@given(case=images())
def test_every_supported_layout_reads_back_as_the_rgb_pixels(case):
    message, rgb = case
    pixels = image_to_numpy(message)
    assert pixels.dtype == np.uint8 and pixels.shape == rgb.shape
    np.testing.assert_array_equal(pixels, rgb)


def test_bgr8_pixels_are_swapped_to_rgb():
    message = raw_image(np.array([[[0, 0, 255], [255, 0, 0]]], dtype=np.uint8), "bgr8", pad=0)
    np.testing.assert_array_equal(image_to_numpy(message), [[[255, 0, 0], [0, 0, 255]]])


def test_mono8_is_replicated_to_three_channels():
    message = raw_image(np.array([[[7], [200]]], dtype=np.uint8), "mono8", pad=2)
    np.testing.assert_array_equal(image_to_numpy(message), [[[7, 7, 7], [200, 200, 200]]])


def test_bgra8_alpha_is_dropped():
    message = raw_image(np.array([[[1, 2, 3, 128]]], dtype=np.uint8), "bgra8", pad=0)
    np.testing.assert_array_equal(image_to_numpy(message), [[[3, 2, 1]]])


def test_the_returned_image_is_contiguous_and_does_not_alias_the_message():
    message = raw_image(np.zeros((4, 5, 3), dtype=np.uint8), "rgb8", pad=0)
    pixels = image_to_numpy(message)
    assert pixels.flags.c_contiguous and pixels.flags.writeable
    pixels[:] = 9
    assert set(message.data) == {0}


@pytest.mark.parametrize("encoding", ["16UC1", "yuv422", "bayer_rggb8", "RGB8"])
def test_unsupported_encodings_are_rejected_with_the_supported_list(encoding):
    message = Image(height=1, width=1, encoding=encoding, step=4, data=bytes(4))
    with pytest.raises(ValueError, match=f"image encoding '{encoding}' is not supported: use one of {SUPPORTED}"):
        image_to_numpy(message)


def test_truncated_image_data_is_rejected_with_both_lengths():
    message = Image(height=4, width=2, encoding="rgb8", step=8, data=bytes(31))
    with pytest.raises(ValueError, match=r"truncated: 31 bytes, but step \* height = 8 \* 4 = 32 bytes"):
        image_to_numpy(message)


def test_a_step_shorter_than_a_row_is_rejected():
    message = Image(height=2, width=4, encoding="rgba8", step=12, data=bytes(32))
    with pytest.raises(ValueError, match=r"step 12 is shorter than a row of 4 rgba8 pixels \(4 \* 4 = 16 bytes\)"):
        image_to_numpy(message)


@pytest.mark.parametrize("width, height", [(0, 3), (3, 0)])
def test_an_image_without_pixels_is_rejected(width, height):
    message = Image(height=height, width=width, encoding="rgb8", step=3 * width, data=b"")
    with pytest.raises(ValueError, match=f"image is empty \\({width}x{height} pixels\\)"):
        image_to_numpy(message)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_numpy_to_image_writes_the_array_unpadded_and_round_trips(encoding):
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[encoding]
    array = np.arange(2 * 3 * channels, dtype=np.uint8).reshape(2, 3, channels)
    header = Header(frame_id="camera")
    message = numpy_to_image(array, encoding, header)
    assert (message.height, message.width, message.step, message.encoding) == (2, 3, 3 * channels, encoding)
    assert message.header.frame_id == "camera"
    assert bytes(message.data) == array.tobytes()
    assert image_to_numpy(message).shape == (2, 3, 3)


def test_numpy_to_image_accepts_a_two_dimensional_mono8_array():
    message = numpy_to_image(np.array([[1, 2]], dtype=np.uint8), "mono8")
    np.testing.assert_array_equal(image_to_numpy(message), [[[1, 1, 1], [2, 2, 2]]])


def test_numpy_to_image_round_trips_rgb():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(rgb)), rgb)


def test_numpy_to_image_rejects_a_float_array():
    with pytest.raises(ValueError, match="dtype float64, expected uint8"):
        numpy_to_image(np.zeros((2, 2, 3)))


def test_numpy_to_image_rejects_a_channel_count_that_does_not_match_the_encoding():
    with pytest.raises(ValueError, match=r"shape \(2, 2, 3\), but rgba8 needs \(height, width, 4\)"):
        numpy_to_image(np.zeros((2, 2, 3), dtype=np.uint8), "rgba8")


# --- point clouds ------------------------------------------------------------------------------------------

FORMATS = {PointField.FLOAT32: "f", PointField.FLOAT64: "d"}


def raw_cloud(points, fields, point_step, is_bigendian=False, height=1, row_pad=0, fill=0xA5) -> PointCloud2:
    """A PointCloud2 packed point by point with struct (independently of the code under test).

    points: (height * width, 3) x, y, z values; fields: (name, offset, datatype) with x, y, z among them.
    Other fields, padding inside points and padding after rows are `fill` bytes.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    width = len(points) // height
    row_step = width * point_step + row_pad
    data = bytearray([fill]) * (row_step * height)
    byte_order = ">" if is_bigendian else "<"
    for index, point in enumerate(points):
        base = (index // width) * row_step + (index % width) * point_step
        for name, offset, datatype in fields:
            if name in "xyz":
                struct.pack_into(byte_order + FORMATS[datatype], data, base + offset, point["xyz".index(name)])
    return PointCloud2(
        height=height,
        width=width,
        fields=[PointField(name=n, offset=o, datatype=d, count=1) for n, o, d in fields],
        is_bigendian=is_bigendian,
        point_step=point_step,
        row_step=row_step,
        data=bytes(data),
    )


@st.composite
def clouds(draw):
    """(message, expected points) for a random field order, offsets, types, byte order, shape and bad points."""
    names = draw(st.permutations(["x", "y", "z", "intensity", "ring"]))
    fields, offset = [], 0
    for name in names:
        offset += draw(st.integers(0, 5))  # gap before the field
        datatype = draw(st.sampled_from([PointField.FLOAT32, PointField.FLOAT64]))
        fields.append((name, offset, datatype))
        offset += 4 if datatype == PointField.FLOAT32 else 8
    point_step = offset + draw(st.integers(0, 9))
    height, width = draw(st.integers(1, 4)), draw(st.integers(0, 6))
    coordinate = st.floats(-1e4, 1e4, width=32)  # float32 values: exact through FLOAT64 fields too
    points = np.array(draw(st.lists(st.tuples(coordinate, coordinate, coordinate),
                                    min_size=height * width, max_size=height * width)),
                      dtype=np.float32).reshape(-1, 3)
    bad = draw(st.lists(st.tuples(st.integers(0, max(len(points) - 1, 0)), st.integers(0, 2),
                                  st.sampled_from([math.nan, math.inf, -math.inf])), max_size=len(points)))
    expected_keep = np.ones(len(points), dtype=bool)
    for row, column, value in bad:
        points[row, column] = value
        expected_keep[row] = False
    message = raw_cloud(points, fields, point_step, is_bigendian=draw(st.booleans()), height=height,
                        row_pad=draw(st.integers(0, 9)), fill=draw(st.integers(0, 255)))
    return message, points[expected_keep]


@settings(max_examples=200, deadline=None)
@given(case=clouds())
def test_every_field_layout_reads_back_as_the_finite_points_in_row_order(case):
    message, expected = case
    xyz = pointcloud2_to_xyz(message)
    assert xyz.dtype == np.float32 and xyz.shape == expected.shape
    np.testing.assert_array_equal(xyz, expected)


def test_xyz_after_an_intensity_field_is_read_at_its_offsets():
    fields = [("intensity", 0, PointField.FLOAT32), ("x", 4, PointField.FLOAT32),
              ("y", 8, PointField.FLOAT32), ("z", 12, PointField.FLOAT32)]
    message = raw_cloud([[1.5, -2.0, 3.25], [4.0, 5.0, 6.0]], fields, point_step=32)
    np.testing.assert_array_equal(pointcloud2_to_xyz(message), [[1.5, -2.0, 3.25], [4.0, 5.0, 6.0]])


def test_organized_cloud_drops_missing_returns_and_keeps_row_order():
    nan = math.nan
    points = [[1, 1, 1], [nan, nan, nan], [2, 2, 2], [3, 3, math.inf]]
    message = raw_cloud(points, [("x", 0, 7), ("y", 4, 7), ("z", 8, 7)], point_step=16, height=2, row_pad=4)
    np.testing.assert_array_equal(pointcloud2_to_xyz(message), [[1, 1, 1], [2, 2, 2]])


def test_float64_coordinates_are_rounded_to_the_nearest_float32():
    message = raw_cloud([[0.1, 1e-3, 1e300]], [("x", 0, 8), ("y", 8, 8), ("z", 16, 8)], point_step=24)
    assert pointcloud2_to_xyz(message).shape == (0, 3)  # 1e300 is inf in float32: dropped
    message = raw_cloud([[0.1, 1e-3, 7.0]], [("x", 0, 8), ("y", 8, 8), ("z", 16, 8)], point_step=24)
    np.testing.assert_array_equal(pointcloud2_to_xyz(message), np.array([[0.1, 1e-3, 7.0]], dtype=np.float32))


def test_an_empty_cloud_gives_no_points():
    assert pointcloud2_to_xyz(PointCloud2(height=1, width=0)).shape == (0, 3)


XYZ = [("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32)]


def test_a_cloud_without_z_is_rejected_listing_its_fields():
    message = raw_cloud([[1, 2, 3]], XYZ[:2] + [("intensity", 8, PointField.FLOAT32)], point_step=12)
    with pytest.raises(ValueError, match=r"no 'z' field \(fields: x, y, intensity\)"):
        pointcloud2_to_xyz(message)


def test_integer_coordinates_are_rejected_naming_the_datatype():
    message = raw_cloud([[1, 2, 3]], XYZ, point_step=12)
    message.fields[0].datatype = PointField.UINT16
    with pytest.raises(ValueError, match=r"field 'x' has datatype 4 \(UINT16\): only FLOAT32 \(7\) and FLOAT64 \(8\)"):
        pointcloud2_to_xyz(message)


def test_a_field_beyond_point_step_is_rejected():
    message = raw_cloud([[1, 2, 3]], XYZ, point_step=12)
    message.fields[2].datatype = PointField.FLOAT64
    with pytest.raises(ValueError, match=r"field 'z' at offset 8 \(8 bytes\) does not fit in point_step 12"):
        pointcloud2_to_xyz(message)


def test_a_row_step_shorter_than_a_row_is_rejected():
    message = raw_cloud([[1, 2, 3], [4, 5, 6]], XYZ, point_step=12)
    message.row_step = 20
    with pytest.raises(ValueError, match=r"row_step 20 is shorter than a row of 2 points \(2 \* point_step 12 = 24"):
        pointcloud2_to_xyz(message)


def test_truncated_cloud_data_is_rejected_with_both_lengths():
    message = raw_cloud([[1, 2, 3], [4, 5, 6]], XYZ, point_step=12, height=2)
    message.data = message.data[:-1]
    with pytest.raises(ValueError, match=r"truncated: 23 bytes, but row_step \* height = 12 \* 2 = 24 bytes"):
        pointcloud2_to_xyz(message)


def test_xyz_to_pointcloud2_round_trips_and_keeps_the_header():
    points = np.array([[1.0, 2.0, 3.0], [-4.5, 0.0, 1e-3]], dtype=np.float32)
    message = xyz_to_pointcloud2(points, header=Header(frame_id="lidar"))
    assert (message.height, message.width, message.point_step, message.row_step) == (1, 2, 12, 24)
    assert message.header.frame_id == "lidar" and message.is_dense
    np.testing.assert_array_equal(pointcloud2_to_xyz(message), points)


def test_xyz_to_pointcloud2_marks_clouds_with_nan_as_not_dense():
    message = xyz_to_pointcloud2([[math.nan, 0, 0], [1, 2, 3]], frame_id="lidar")
    assert message.header.frame_id == "lidar" and not message.is_dense
    np.testing.assert_array_equal(pointcloud2_to_xyz(message), [[1, 2, 3]])


def test_xyz_to_pointcloud2_rejects_a_header_and_a_frame_id_together():
    with pytest.raises(ValueError, match="either a header or a frame_id"):
        xyz_to_pointcloud2(np.zeros((1, 3)), header=Header(frame_id="a"), frame_id="b")


def test_xyz_to_pointcloud2_rejects_points_that_are_not_n_by_3():
    with pytest.raises(ValueError, match=r"points have shape \(4, 2\), expected \(N, 3\)"):
        xyz_to_pointcloud2(np.zeros((4, 2)))


# --- regions -----------------------------------------------------------------------------------------------


def test_region2d_becomes_pixel_xyxy():
    regions = [Region2D(id="a", x=10.0, y=20.0, width=30.0, height=40.0),
               Region2D(id="b", x=0.5, y=0.0, width=1.0, height=2.0)]
    boxes, problems = region2d_to_xyxy(regions)
    assert boxes.dtype == np.float32
    np.testing.assert_array_equal(boxes, [[10, 20, 40, 60], [0.5, 0, 1.5, 2]])
    assert problems == {}


def test_no_region2d_gives_an_empty_box_array():
    boxes, problems = region2d_to_xyxy([])
    assert boxes.shape == (0, 4) and problems == {}


@pytest.mark.parametrize("field", ["x", "y", "width", "height"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_region2d_with_nan_or_inf_is_a_nan_row_with_its_reason_and_the_others_are_read(field, value):
    regions = [Region2D(id="ok", x=1.0, y=2.0, width=3.0, height=4.0), Region2D(id="cup", **{field: value})]
    boxes, problems = region2d_to_xyxy(regions)
    np.testing.assert_array_equal(boxes[0], [1, 2, 4, 6])
    assert np.isnan(boxes[1]).all()
    assert problems == {1: "x, y, width or height has NaN or inf values"}


def test_region2d_checks_nothing_but_finiteness_the_runtime_checks_the_box():
    regions = [Region2D(id="negative", x=30.0, y=4.0, width=-20.0, height=20.0),
               Region2D(id="outside", x=1e4, y=1e4, width=1.0, height=1.0),
               Region2D(id="huge", x=3e38, y=0.0, width=3e38, height=1.0)]
    boxes, problems = region2d_to_xyxy(regions)
    np.testing.assert_array_equal(boxes[:2], [[30, 4, 10, 24], [1e4, 1e4, 1e4 + 1, 1e4 + 1]])
    assert boxes[2, 2] == np.inf  # beyond float32: the runtime refuses it as not finite
    assert problems == {}


def region3d(region_id="box", position=(0.0, 0.0, 0.0), quaternion=(0.0, 0.0, 0.0, 1.0), size=(1.0, 1.0, 1.0)):
    x, y, z, w = quaternion
    return Region3D(id=region_id, center=Pose(position=Point(x=position[0], y=position[1], z=position[2]),
                                              orientation=Quaternion(x=x, y=y, z=z, w=w)),
                    size=Vector3(x=size[0], y=size[1], z=size[2]))


def corners_of(regions):
    corners, problems = region3d_to_corners(regions)
    assert problems == {}
    return corners


def test_axis_aligned_region3d_corners():
    corners = corners_of([region3d(position=(1.0, 2.0, 3.0), size=(2.0, 4.0, 6.0))])
    assert corners.dtype == np.float32 and corners.shape == (1, 8, 3)
    np.testing.assert_array_equal(corners[0, [0, 6]], [[2, 5, 5], [0, -1, 1]])  # (+,+,+), (-,-,-); y/z extents swapped


def test_yawed_region3d_matches_box_corners_of_the_yaw_matrix():
    yaw = 0.7
    region = region3d(position=(5.0, -1.0, 0.5), quaternion=(0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)),
                      size=(4.0, 2.0, 1.5))
    expected = box_corners([[5.0, -1.0, 0.5]], [[4.0, 2.0, 1.5]], yaw_to_matrix([yaw]))
    np.testing.assert_allclose(corners_of([region]), expected, atol=1e-6)


def test_region3d_quaternion_is_normalised():
    scaled = region3d(quaternion=(0.0, 0.0, 0.0, 2.5), size=(2.0, 2.0, 2.0))
    unit = region3d(size=(2.0, 2.0, 2.0))
    np.testing.assert_array_equal(corners_of([scaled]), corners_of([unit]))


def test_no_region3d_gives_an_empty_corner_array():
    corners, problems = region3d_to_corners([])
    assert corners.shape == (0, 8, 3) and problems == {}


def assert_only_row_1_unread(regions, reason):
    corners, problems = region3d_to_corners(regions)
    assert corners.shape == (len(regions), 8, 3) and corners.dtype == np.float32
    np.testing.assert_array_equal(corners[0], corners_of([regions[0]])[0])
    assert np.isnan(corners[1]).all()
    assert problems == {1: reason}


def test_region3d_with_a_zero_quaternion_is_a_nan_row_with_its_reason():
    assert_only_row_1_unread([region3d("table"), region3d("chair", quaternion=(0.0, 0.0, 0.0, 0.0))],
                             "center.orientation is a zero quaternion: set a unit quaternion, w=1 for an "
                             "axis-aligned box")


@pytest.mark.parametrize("field, region", [
    ("center.position", region3d("car", position=(math.nan, 0.0, 0.0))),
    ("center.orientation", region3d("car", quaternion=(0.0, 0.0, math.nan, 1.0))),
    ("size", region3d("car", size=(1.0, math.inf, 1.0))),
])
def test_region3d_with_nan_or_inf_is_a_nan_row_with_its_reason(field, region):
    assert_only_row_1_unread([region3d("ok"), region], f"{field} has NaN or inf values")


def test_region3d_with_a_negative_size_is_a_nan_row_with_its_reason():
    assert_only_row_1_unread([region3d("ok"), region3d("bin", size=(1.0, -2.0, 1.0))],
                             "size [1.0, -2.0, 1.0] is negative: give full extents >= 0")


def test_region3d_beyond_float32_comes_out_inf_for_the_runtime_to_refuse():
    corners, problems = region3d_to_corners([region3d("far", size=(1e300, 1.0, 1.0))])
    assert problems == {} and np.isinf(corners).any()
