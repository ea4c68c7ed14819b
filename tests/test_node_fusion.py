"""Camera–LiDAR fusion in the region_describer (fuse_camera): LiDAR regions get the camera's description of where
they land in the image nearest their cloud, and bad calibration is logged and skipped with the node up.

The scene: a LiDAR (x forward, y left, z up) with a 64 x 48 camera 0.5 m above it looking forward (fx = fy = 50,
principal point at the image centre). A 1 m cube 4 m ahead at the camera's height spans camera x, y in
[-0.5, 0.5] and z in [3.5, 4.5], so it projects to 32 +- 25 / 3.5 by 24 +- 25 / 3.5 pixels; a cube 4 m behind
the LiDAR is behind the camera.
"""

import importlib.util

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from rclpy.parameter import Parameter  # noqa: E402
from regionblip_msgs.msg import RegionDescription, RegionDescriptionArray  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import QOS, NodeRig, camera_image, cubes, header, lidar_cloud, wait_for  # noqa: E402
from regionblip_ros import describer_node  # noqa: E402
from regionblip_ros.describer_node import RegionDescriber  # noqa: E402
from regionblip_ros.fusion import CameraFusion, camera_from_info  # noqa: E402
from regionblip_ros.projection import rigid_transform  # noqa: E402

CAMERA_ABOVE_LIDAR = [0.0, 0.5, 0.0, 0.5, -0.5, 0.5, 0.5]  # p_camera = (-y, 0.5 - z, x)
AHEAD, BEHIND = (4.0, 0.0, 0.5), (-4.0, 0.0, 0.5)
PROJECTED_AHEAD = [32 - 25 / 3.5, 24 - 25 / 3.5, 32 + 25 / 3.5, 24 + 25 / 3.5]


def camera_info(stamp=None, k=(50.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0), width=64, height=48) -> CameraInfo:
    return CameraInfo(header=stamp or header(0), k=list(k), width=width, height=height)


# --- CameraFusion alone ----------------------------------------------------------------------------------------


def lidar_descriptions(*centres) -> RegionDescriptionArray:
    array = RegionDescriptionArray(header=header(50, 0, "lidar"))
    for region in cubes(*centres):
        array.descriptions.append(RegionDescription(id=region.id, text="a cube", modality="pointcloud_region",
                                                    label=region.label, region_3d=region))
    return array


@pytest.fixture
def fusion():
    matrix = rigid_transform(CAMERA_ABOVE_LIDAR)
    fusion = CameraFusion(lambda camera_frame, lidar_frame, stamp: matrix, min_region_px=4.0)
    assert fusion.set_camera_info(camera_info()) == []
    return fusion


def test_a_region_in_view_gets_the_camera_text_score_and_projected_box_in_one_call(fusion):
    describer, array = DescriberDouble(), lidar_descriptions(BEHIND, AHEAD)
    problems = fusion.fuse(describer, array, camera_image(header(50)))

    behind, ahead = array.descriptions
    assert describer.calls == [("describe_image_regions", 1)]
    assert (ahead.camera_text, ahead.camera_score, ahead.text) == ("region 0 of 64x48 image", -0.5, "a cube")
    box = ahead.region_2d
    np.testing.assert_allclose([box.x, box.y, box.x + box.width, box.y + box.height], PROJECTED_AHEAD, rtol=1e-5)
    assert (box.id, box.label) == (ahead.id, ahead.label)
    assert (behind.camera_text, behind.region_2d.width) == ("", 0.0)
    [problem] = problems
    assert problem.kind == "projection" and "'obj-0'" in problem.message and "behind the camera" in problem.message


def test_a_lidar_regions_prompt_asks_the_camera_too(fusion):
    describer, array = DescriberDouble(), lidar_descriptions(AHEAD)
    array.descriptions[0].region_3d.prompt = "Question: what colour is it? Answer:"
    assert fusion.fuse(describer, array, camera_image(header(50))) == []
    assert describer.prompts == [["Question: what colour is it? Answer:"]]


def test_without_an_image_or_camera_info_nothing_is_fused_and_each_reason_is_named():
    fusion = CameraFusion(lambda *_: np.eye(4), min_region_px=0.0)
    array = lidar_descriptions(AHEAD)
    assert [p.kind for p in fusion.fuse(DescriberDouble(), array, None)] == ["fusion_no_image"]
    assert [p.kind for p in fusion.fuse(DescriberDouble(), array, camera_image(header(50)))] == \
        ["fusion_no_camera_info"]
    assert array.descriptions[0].camera_text == ""


def test_a_missing_transform_is_named_and_nothing_is_fused(fusion):
    def no_transform(camera_frame, lidar_frame, stamp):
        raise LookupError(f"{lidar_frame} is not connected to {camera_frame}")

    fusion.transforms = no_transform
    [problem] = fusion.fuse(DescriberDouble(), lidar_descriptions(AHEAD), camera_image(header(50)))
    assert problem.kind == "fusion_no_transform" and "lidar is not connected to camera_optical" in problem.message


def test_camera_info_for_another_image_size_is_refused_at_fusion(fusion):
    fusion.set_camera_info(camera_info(width=128, height=96))
    [problem] = fusion.fuse(DescriberDouble(), lidar_descriptions(AHEAD), camera_image(header(50)))
    assert problem.kind == "camera_info" and "128x96 images, the image is 64x48" in problem.message


@pytest.mark.parametrize("info, says", [
    (camera_info(k=(0.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0)), "fx = 0"),
    (camera_info(k=(np.nan, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0)), "NaN or inf"),
    (camera_info(width=0), "size is 0x48"),
    (CameraInfo(width=64, height=48), "uncalibrated"),  # K all zeros
], ids=["zero fx", "NaN", "zero size", "uncalibrated"])
def test_a_malformed_camera_info_pauses_fusion_with_what_is_wrong(fusion, info, says):
    [problem] = fusion.set_camera_info(info)
    assert problem.kind == "camera_info" and says in problem.message
    assert [p.kind for p in fusion.fuse(DescriberDouble(), lidar_descriptions(AHEAD), camera_image(header(50)))] \
        == ["fusion_no_camera_info"]


def test_camera_info_with_binning_is_refused():
    with pytest.raises(ValueError, match="binning 2x2"):
        camera_from_info(CameraInfo(k=camera_info().k, width=64, height=48, binning_x=2, binning_y=2))


# --- the running node ------------------------------------------------------------------------------------------


@pytest.fixture
def rig(ros_context):
    rig = NodeRig(ros_context, DescriberDouble(), fuse_camera=True, lidar_to_camera=CAMERA_ABOVE_LIDAR)
    rig.camera_info_pub = rig.peer.create_publisher(CameraInfo, "camera_info", QOS)
    assert wait_for(lambda: rig.camera_info_pub.get_subscription_count()), "camera_info never matched"
    yield rig
    rig.close()


def send_camera_info(rig: NodeRig, info: CameraInfo) -> None:
    rig.publish_frame(rig.camera_info_pub, "camera_info", info)


def test_the_node_fuses_a_lidar_region_with_the_image_nearest_its_cloud(rig):
    send_camera_info(rig, camera_info(header(60)))
    rig.publish_frame(rig.image_pub, "image", camera_image(header(60, 0)))
    cloud = lidar_cloud(header(60, 10_000_000, "lidar"))  # 10 ms after the image: within sync_slop
    rig.send_cloud(cloud, cubes(AHEAD, BEHIND))

    out = rig.next_descriptions()
    ahead, behind = out.descriptions
    assert out.header == cloud.header and ahead.modality == "pointcloud_region"
    assert (ahead.text, ahead.camera_text) == ("object 0 among 500 points", "region 0 of 64x48 image")
    assert ahead.region_2d.width == pytest.approx(50 / 3.5, rel=1e-5)
    assert (behind.text, behind.camera_text) == ("object 1 among 500 points", "")
    assert rig.problems() == {"projection": 1}


def test_a_malformed_camera_info_is_counted_and_skipped_and_the_node_fuses_again_after_a_valid_one(rig):
    send_camera_info(rig, camera_info(header(70), k=(0.0,) * 9))
    rig.publish_frame(rig.image_pub, "image", camera_image(header(70, 0)))
    rig.send_cloud(lidar_cloud(header(70, 0, "lidar")), cubes(AHEAD))
    unfused = rig.next_descriptions()
    assert unfused.descriptions[0].text and unfused.descriptions[0].camera_text == ""
    assert rig.problems() == {"camera_info": 1, "fusion_no_camera_info": 1}

    send_camera_info(rig, camera_info(header(71)))
    rig.publish_frame(rig.image_pub, "image", camera_image(header(71, 0)))
    rig.send_cloud(lidar_cloud(header(71, 0, "lidar")), cubes(AHEAD))
    assert rig.next_descriptions(2).descriptions[0].camera_text == "region 0 of 64x48 image"


def test_a_malformed_lidar_to_camera_stops_the_node_at_start_with_what_is_wrong(ros_context):
    with pytest.raises(ValueError, match=r"parameter lidar_to_camera is \[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0\]: "
                                         ".*zero quaternion"):
        RegionDescriber(describer=DescriberDouble(), context=ros_context,
                        parameter_overrides=[Parameter("lidar_to_camera", value=[0.0] * 7)])


def test_the_entry_point_exits_1_with_one_line_for_a_short_lidar_to_camera(capsys):
    assert describer_node.main(["region_describer", "--ros-args", "-p", "lidar_to_camera:=[1.0, 2.0]"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "parameter lidar_to_camera is [1.0, 2.0]: a transform has 7 values" in err


@pytest.mark.skipif(importlib.util.find_spec("tf2_ros") is not None,
                    reason="tf2_ros is installed: the node would look the transform up instead")
def test_without_lidar_to_camera_or_tf2_fusion_is_off_and_camera_info_not_subscribed(ros_context):
    node = RegionDescriber(describer=DescriberDouble(), context=ros_context,
                           parameter_overrides=[Parameter("fuse_camera", value=True)])
    try:
        assert node.fusion is None
        assert "/camera_info" not in [s.topic_name for s in node.subscriptions]
    finally:
        node.destroy_node()
