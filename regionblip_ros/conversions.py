"""Message ⇄ numpy conversion: images, point clouds and regions of interest.

Pure functions, no node or graph needed. Image and cloud readers accept every layout the message definitions
allow (row and point padding, any field order, either byte order) and reject what they cannot read with a
ValueError that says what was wrong. Each reader copies the payload once, into the returned array, which owns
its memory. Region readers never raise for one bad region: they return a NaN row in its place and the reason
by row, so that the frame's other regions are still described.
"""

import array
import sys
from collections.abc import Sequence

import numpy as np
from regionblip_msgs.msg import Region2D, Region3D
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header

from contract.boxes import MIN_QUATERNION_NORM, box_corners, quaternion_to_matrix

# Bytes per pixel of each supported encoding, and the slice of its channels that reads R, G, B in order
# (mono8: its one channel, broadcast to three).
_IMAGE_ENCODINGS = {
    "rgb8": (3, slice(0, 3)),
    "bgr8": (3, slice(2, None, -1)),
    "rgba8": (4, slice(0, 3)),
    "bgra8": (4, slice(2, None, -1)),
    "mono8": (1, slice(0, 1)),
}

_POINT_FIELD_DTYPES = {PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"}
_POINT_FIELD_NAMES = {
    PointField.INT8: "INT8",
    PointField.UINT8: "UINT8",
    PointField.INT16: "INT16",
    PointField.UINT16: "UINT16",
    PointField.INT32: "INT32",
    PointField.UINT32: "UINT32",
    PointField.FLOAT32: "FLOAT32",
    PointField.FLOAT64: "FLOAT64",
}


_SUPPORTED_ENCODINGS = ", ".join(_IMAGE_ENCODINGS)


def _uint8_field(data: bytes) -> array.array:
    # Assigning an array.array('B') to a message's uint8[] field is the one form that is not checked per byte.
    return array.array("B", data)


def image_to_numpy(msg: Image) -> np.ndarray:
    """The pixels of an 8-bit Image as an (height, width, 3) uint8 RGB array.

    Supports rgb8, bgr8, rgba8, bgra8 (alpha dropped) and mono8 (replicated to three channels), with any row
    padding (step >= width * bytes per pixel). is_bigendian has no meaning for 8-bit channels and is ignored.
    """
    if msg.encoding not in _IMAGE_ENCODINGS:
        raise ValueError(
            f"image encoding '{msg.encoding}' is not supported: use one of {_SUPPORTED_ENCODINGS} "
            "(convert or debayer upstream, e.g. with image_proc)"
        )
    channels, rgb = _IMAGE_ENCODINGS[msg.encoding]
    height, width, step = msg.height, msg.width, msg.step
    if width == 0 or height == 0:
        raise ValueError(f"image is empty ({width}x{height} pixels): publish an image with pixels in it")
    if step < width * channels:
        raise ValueError(
            f"image step {step} is shorter than a row of {width} {msg.encoding} pixels "
            f"({width} * {channels} = {width * channels} bytes): step is the length of a row in bytes"
        )
    if len(msg.data) < step * height:
        raise ValueError(
            f"image data is truncated: {len(msg.data)} bytes, but step * height = {step} * {height} = "
            f"{step * height} bytes are needed"
        )
    pixels = np.ndarray((height, width, channels), np.uint8, buffer=msg.data, strides=(step, channels, 1))
    rgb_view = np.broadcast_to(pixels[..., rgb], (height, width, 3))
    return rgb_view.copy(order="C")  # the one copy: only the pixels, out of the message's buffer


def numpy_to_image(array_hwc, encoding: str = "rgb8", header: Header | None = None) -> Image:
    """An Image holding a uint8 array laid out as `encoding` says, unpadded, like cv_bridge.cv2_to_imgmsg.

    The array is (height, width, channels) in the encoding's own channel order: 3 for rgb8/bgr8, 4 for
    rgba8/bgra8, and (height, width) or (height, width, 1) for mono8. No channel reordering happens here.
    """
    if encoding not in _IMAGE_ENCODINGS:
        raise ValueError(f"image encoding '{encoding}' is not supported: use one of {_SUPPORTED_ENCODINGS}")
    channels, _ = _IMAGE_ENCODINGS[encoding]
    pixels = np.asarray(array_hwc)
    if pixels.dtype != np.uint8:
        raise ValueError(f"image array has dtype {pixels.dtype}, expected uint8: convert it (e.g. .astype(np.uint8))")
    if channels == 1 and pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] != channels:
        raise ValueError(
            f"image array has shape {pixels.shape}, but {encoding} needs (height, width, {channels})"
            + (" or (height, width)" if channels == 1 else "")
        )
    height, width, _ = pixels.shape
    return Image(
        header=header if header is not None else Header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels,
        data=_uint8_field(np.ascontiguousarray(pixels).tobytes()),
    )


def _xyz_fields(msg: PointCloud2) -> dict[str, PointField]:
    by_name: dict[str, PointField] = {}
    for field in msg.fields:
        by_name.setdefault(field.name, field)
    missing = [name for name in "xyz" if name not in by_name]
    if missing:
        present = ", ".join(f.name for f in msg.fields) or "none"
        raise ValueError(
            f"point cloud has no {', '.join(repr(m) for m in missing)} field (fields: {present}): "
            "publish points with x, y and z fields"
        )
    xyz = {name: by_name[name] for name in "xyz"}
    for name, field in xyz.items():
        if field.datatype not in _POINT_FIELD_DTYPES:
            kind = _POINT_FIELD_NAMES.get(field.datatype, "unknown")
            raise ValueError(
                f"point cloud field '{name}' has datatype {field.datatype} ({kind}): "
                f"only FLOAT32 ({PointField.FLOAT32}) and FLOAT64 ({PointField.FLOAT64}) coordinates are supported"
            )
        size = np.dtype(_POINT_FIELD_DTYPES[field.datatype]).itemsize
        if field.offset + size > msg.point_step:
            raise ValueError(
                f"point cloud field '{name}' at offset {field.offset} ({size} bytes) does not fit in "
                f"point_step {msg.point_step}: point_step must cover every field of a point"
            )
    return xyz


def pointcloud2_to_xyz(msg: PointCloud2) -> np.ndarray:
    """The finite points of a PointCloud2 as an (N, 3) float32 array, row by row.

    Reads x, y, z wherever they are in the point (FLOAT32 or FLOAT64, either byte order), skipping point and
    row padding; organized clouds (height > 1) are flattened. Points with a coordinate that is NaN or inf
    are dropped (organized clouds mark missing returns so), as are FLOAT64 points beyond float32 range.
    """
    height, width = msg.height, msg.width
    if height == 0 or width == 0:
        return np.empty((0, 3), dtype=np.float32)
    fields = _xyz_fields(msg)
    if msg.row_step < width * msg.point_step:
        raise ValueError(
            f"point cloud row_step {msg.row_step} is shorter than a row of {width} points "
            f"({width} * point_step {msg.point_step} = {width * msg.point_step} bytes)"
        )
    if len(msg.data) < msg.row_step * height:
        raise ValueError(
            f"point cloud data is truncated: {len(msg.data)} bytes, but row_step * height = "
            f"{msg.row_step} * {height} = {msg.row_step * height} bytes are needed"
        )
    byte_order = ">" if msg.is_bigendian else "<"
    point = np.dtype(
        {
            "names": list(fields),
            "formats": [byte_order + _POINT_FIELD_DTYPES[f.datatype] for f in fields.values()],
            "offsets": [f.offset for f in fields.values()],
            "itemsize": msg.point_step,
        }
    )
    points = np.ndarray((height, width), point, buffer=msg.data, strides=(msg.row_step, msg.point_step))
    with np.errstate(over="ignore"):  # FLOAT64 beyond float32 range becomes inf, then is dropped below
        xyz = np.stack([points[name] for name in "xyz"], axis=-1, dtype=np.float32).reshape(-1, 3)
    finite = np.isfinite(xyz).all(axis=1)
    return xyz if finite.all() else xyz[finite]


def xyz_to_pointcloud2(points, header: Header | None = None, frame_id: str = "") -> PointCloud2:
    """An unorganized PointCloud2 (height 1) with FLOAT32 x, y, z fields, packed, in native byte order.

    The header is used as given; without one, a header with `frame_id` and a zero stamp is made. A coordinate
    beyond float32's range is written as inf (and the cloud is not dense), which the readers drop as they drop
    a missing return.
    """
    xyz = np.asarray(points)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points have shape {xyz.shape}, expected (N, 3)")
    if header is not None and frame_id:
        raise ValueError("give either a header or a frame_id, not both: the header already names the frame")
    with np.errstate(over="ignore"):
        xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    point_step = 3 * 4
    return PointCloud2(
        header=header if header is not None else Header(frame_id=frame_id),
        height=1,
        width=len(xyz),
        fields=[
            PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
            for i, name in enumerate("xyz")
        ],
        is_bigendian=sys.byteorder == "big",
        point_step=point_step,
        row_step=point_step * len(xyz),
        data=_uint8_field(xyz.tobytes()),
        is_dense=bool(np.isfinite(xyz).all()),
    )


def _first_non_finite(groups: dict[str, np.ndarray]) -> dict[int, str]:
    """{row: reason} for the rows where one of the named (R, k) value groups holds a NaN or inf."""
    problems: dict[int, str] = {}
    for what, values in groups.items():
        for row in np.flatnonzero(~np.isfinite(values).all(axis=1)):
            problems.setdefault(int(row), f"{what} has NaN or inf values")
    return problems


def region2d_to_xyxy(regions: Sequence[Region2D]) -> tuple[np.ndarray, dict[int, str]]:
    """Pixel boxes (R, 4) float32 as (x, y, x + width, y + height), one per region, in order, and {row: reason}
    for the regions that cannot be read (a NaN or inf value), whose rows are NaN.

    Nothing else is checked here: whether a box can be described (its size, whether it lies in the image) is the
    runtime's one check, Describer.describe_image_regions.
    """
    xywh = np.array([(r.x, r.y, r.width, r.height) for r in regions], dtype=np.float64).reshape(-1, 4)
    problems = _first_non_finite({"x, y, width or height": xywh})
    with np.errstate(over="ignore", invalid="ignore"):  # x + width beyond float32 is inf: the runtime names it
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    boxes[list(problems)] = np.nan
    return boxes, problems


def _unit_quaternion(quaternion: np.ndarray) -> np.ndarray | None:
    """quaternion / |quaternion|, or None when |quaternion| < MIN_QUATERNION_NORM.

    Divided by its largest component first: |q| of a finite quaternion beyond ~1e154 overflows to inf, and its
    rotation would come out NaN.
    """
    largest = np.abs(quaternion).max()
    if not largest >= MIN_QUATERNION_NORM / 2:  # |q| <= 2 * largest: too short whatever the other components
        return None
    direction = quaternion / largest
    length = np.linalg.norm(direction)  # in [1, 2]
    return direction / length if length >= MIN_QUATERNION_NORM / largest else None


def region3d_to_corners(regions: Sequence[Region3D]) -> tuple[np.ndarray, dict[int, str]]:
    """The 8 corners (R, 8, 3) float32 of each region's box, in contract.boxes.BOX_CORNER_SIGNS order, and
    {row: reason} for the regions that cannot be read, whose rows are NaN: a NaN or inf value, a zero
    quaternion or a negative size.

    The pose quaternion is normalised. Corners beyond float32's range come out inf, for the runtime's check
    (Describer.describe_point_regions) to name.
    """
    center = np.array([(r.center.position.x, r.center.position.y, r.center.position.z) for r in regions])
    quaternion = np.array(
        [(r.center.orientation.x, r.center.orientation.y, r.center.orientation.z, r.center.orientation.w)
         for r in regions]
    )
    size = np.array([(r.size.x, r.size.y, r.size.z) for r in regions])
    center, quaternion, size = center.reshape(-1, 3), quaternion.reshape(-1, 4), size.reshape(-1, 3)

    problems = _first_non_finite({"center.position": center, "center.orientation": quaternion, "size": size})
    unit = np.zeros_like(quaternion)
    for row in range(len(regions)):
        if row in problems:
            continue
        unit_row = _unit_quaternion(quaternion[row])
        if unit_row is None:
            problems[row] = ("center.orientation is a zero quaternion: "
                             "set a unit quaternion, w=1 for an axis-aligned box")
        elif (size[row] < 0).any():
            problems[row] = f"size {size[row].tolist()} is negative: give full extents >= 0"
        else:
            unit[row] = unit_row
    corners = np.full((len(regions), 8, 3), np.nan, np.float32)
    readable = [row for row in range(len(regions)) if row not in problems]
    with np.errstate(over="ignore"):  # a huge but finite size overflows float32: inf, named by the runtime
        corners[readable] = box_corners(center[readable], size[readable], quaternion_to_matrix(unit[readable]))
    return corners, dict(sorted(problems.items()))
