"""A region's text prompt (Region2D.prompt, Region3D.prompt) reaches the describer with its region, from both region
topics and from the describe_regions service."""

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from regionblip_msgs.srv import DescribeRegions  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import NodeRig, boxes, camera_image, cubes, header, lidar_cloud  # noqa: E402
from regionblip_ros.frames import describe_camera_frame  # noqa: E402

QUESTION = "Question: what colour is it? Answer:"


@pytest.fixture
def describer():
    return DescriberDouble()


@pytest.fixture
def rig(ros_context, describer):
    rig = NodeRig(ros_context, describer)
    yield rig
    rig.close()


def with_prompts(regions, *prompts):
    for region, prompt in zip(regions, prompts):
        region.prompt = prompt
    return regions


def test_a_2d_regions_prompt_reaches_the_describer_with_its_region(rig, describer):
    rig.send_image(camera_image(header(10, 0)), with_prompts(boxes((2, 3, 20, 10), (30, 20, 16, 16)), "", QUESTION))
    out = rig.next_descriptions()
    assert describer.prompts == [["", QUESTION]]
    assert [d.text for d in out.descriptions] == ["region 0 of 64x48 image",
                                                   f"region 1 of 64x48 image, asked {QUESTION!r}"]
    assert out.descriptions[1].region_2d.prompt == QUESTION


def test_a_3d_regions_prompt_reaches_the_describer_with_its_region(rig, describer):
    rig.send_cloud(lidar_cloud(header(11, 0, "lidar")), with_prompts(cubes((1, 2, 0.5), (-3, 0, 1)), "what?", ""))
    out = rig.next_descriptions()
    assert describer.prompts == [["what?", ""]]
    assert [d.text for d in out.descriptions] == ["object 0 among 500 points, asked 'what?'",
                                                   "object 1 among 500 points"]


def test_the_service_passes_each_regions_prompt(rig, describer):
    response = rig.call(DescribeRegions.Request(
        image=camera_image(header(12, 0)), regions_2d=with_prompts(boxes((0, 0, 16, 16)), "what shape?"),
        cloud=lidar_cloud(header(12, 0, "lidar")), regions_3d=with_prompts(cubes((1, 2, 0.5)), QUESTION)))
    assert response.success
    assert describer.prompts == [["what shape?"], [QUESTION]]
    assert [d.text for d in response.descriptions.descriptions] == [
        "region 0 of 64x48 image, asked 'what shape?'", f"object 0 among 500 points, asked {QUESTION!r}"]


def test_regions_without_prompts_reach_a_describer_that_knows_nothing_of_them(describer):
    class WithoutPrompts(DescriberDouble):  # a describer from before prompts: no prompts argument
        def describe_image_regions(self, image, boxes_xyxy_px, min_region_px=0.0):
            return super().describe_image_regions(image, boxes_xyxy_px, min_region_px)

    result = describe_camera_frame(WithoutPrompts(), camera_image(header(13, 0)), boxes((2, 3, 20, 10)),
                                   max_regions=8, min_region_px=0.0)
    assert [d.text for d in result.descriptions.descriptions] == ["region 0 of 64x48 image"]
