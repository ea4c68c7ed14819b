"""regionblip_ros.markers: a text marker at the centre of each described 3D region."""

import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from regionblip_msgs.msg import RegionDescription, RegionDescriptionArray  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from node_rig import boxes, cubes, header  # noqa: E402
from regionblip_ros.markers import TEXT_HEIGHT_M, description_markers  # noqa: E402


def descriptions() -> RegionDescriptionArray:
    crate, cone = cubes((1, 2, 0.5), (-3, 0, 1))
    return RegionDescriptionArray(header=header(9, 0, "lidar"), descriptions=[
        RegionDescription(id="obj-0", text="a wooden crate", label="crate", modality="pointcloud_region",
                          region_3d=crate),
        RegionDescription(id="det-0", text="a red cup", label="cup", modality="image_region",
                          region_2d=boxes((1, 1, 5, 5))[0]),
        RegionDescription(id="obj-1", text="a traffic cone", label="", modality="pointcloud_region",
                          region_3d=cone),
    ])


def test_the_first_marker_clears_the_previous_frame():
    first = description_markers(descriptions()).markers[0]
    assert first.action == Marker.DELETEALL
    assert first.header.frame_id == "lidar"


def test_each_3d_region_gets_view_facing_text_at_its_centre_and_2d_regions_none():
    _, *texts = description_markers(descriptions()).markers
    assert [(m.id, m.type, m.action, m.text) for m in texts] == [
        (0, Marker.TEXT_VIEW_FACING, Marker.ADD, "crate: a wooden crate"),
        (2, Marker.TEXT_VIEW_FACING, Marker.ADD, "a traffic cone"),
    ]
    assert [(m.pose.position.x, m.pose.position.y, m.pose.position.z) for m in texts] == [(1, 2, 0.5), (-3, 0, 1)]
    assert {(m.header.frame_id, m.header.stamp.sec, m.scale.z, m.color.a) for m in texts} == {
        ("lidar", 9, TEXT_HEIGHT_M, 1.0)}
