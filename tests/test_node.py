"""The region_describer node over real DDS: frames and regions in, descriptions, markers, images out."""

import time

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from regionblip_msgs.msg import Region2DArray  # noqa: E402
from regionblip_msgs.srv import DescribeRegions  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import (  # noqa: E402
    NodeRig, boxes, camera_image, cubes, header, lidar_cloud, wait_for,
)
from regionblip_ros import describer_node  # noqa: E402
from regionblip_ros.conversions import image_to_numpy  # noqa: E402
from regionblip_ros.describer_node import PARAMETERS, SENSOR_QOS, SENSOR_RELIABILITY, RegionDescriber  # noqa: E402
from regionblip_ros.drawing import COLOURS  # noqa: E402


@pytest.fixture
def describer():
    return DescriberDouble()


@pytest.fixture
def rig(ros_context, describer, request):
    parameters = getattr(request, "param", {})
    rig = NodeRig(ros_context, describer, **parameters)
    yield rig
    rig.close()


def test_image_regions_are_described_one_per_region_in_order_with_the_image_header(rig):
    image = camera_image(header(1_700_000_000, 250_000_000, "camera_optical"), width=64, height=48)
    rig.send_image(image, boxes((2, 3, 20, 10), (30, 20, 16, 16), (40, 0, 8, 30), label="cup"))

    out = rig.next_descriptions()
    assert out.header == image.header
    assert [d.id for d in out.descriptions] == ["det-0", "det-1", "det-2"]
    assert [d.text for d in out.descriptions] == [f"region {i} of 64x48 image" for i in range(3)]
    assert [d.score for d in out.descriptions] == [-0.5, -1.5, -2.5]
    assert {d.modality for d in out.descriptions} == {"image_region"}
    assert {d.label for d in out.descriptions} == {"cup"}
    assert (out.descriptions[1].region_2d.x, out.descriptions[1].region_2d.width) == (30.0, 16.0)
    assert out.inference_ms >= 0.0


def test_cloud_regions_are_described_one_per_region_in_order_with_the_cloud_header(rig):
    cloud = lidar_cloud(header(1_700_000_001, 5, "lidar"), points=500)
    rig.send_cloud(cloud, cubes((1, 2, 0.5), (-3, 0, 1), label="crate"))

    out = rig.next_descriptions()
    assert out.header == cloud.header
    assert [(d.id, d.text, d.modality) for d in out.descriptions] == [
        ("obj-0", "object 0 among 500 points", "pointcloud_region"),
        ("obj-1", "object 1 among 500 points", "pointcloud_region"),
    ]
    assert out.descriptions[1].region_3d.center.position.x == -3.0


def test_each_3d_region_gets_a_text_marker_at_its_centre_after_clearing_the_last_frame(rig):
    cloud = lidar_cloud(header(1_700_000_002, 0, "lidar"))
    rig.send_cloud(cloud, cubes((1, 2, 0.5), (-3, 0, 1), label="crate"))

    assert wait_for(lambda: rig.markers), "no markers were published"
    clear, *texts = rig.markers[0].markers
    assert clear.action == Marker.DELETEALL
    assert [(m.type, m.header.frame_id, m.text) for m in texts] == [
        (Marker.TEXT_VIEW_FACING, "lidar", "crate: object 0 among 500 points"),
        (Marker.TEXT_VIEW_FACING, "lidar", "crate: object 1 among 500 points"),
    ]
    assert [(m.pose.position.x, m.pose.position.y, m.pose.position.z) for m in texts] == [(1, 2, 0.5), (-3, 0, 1)]


def test_the_annotated_image_has_the_frame_header_and_each_box_outlined(rig):
    image = camera_image(header(1_700_000_003, 0), width=64, height=48)
    rig.send_image(image, boxes((10, 20, 30, 20)))

    assert wait_for(lambda: rig.annotated), "no annotated image was published"
    annotated = rig.annotated[0]
    assert annotated.header == image.header
    pixels = image_to_numpy(annotated)
    assert pixels.shape == (48, 64, 3)
    assert tuple(pixels[30, 10]) == COLOURS[0]  # left edge of the box
    assert tuple(pixels[39, 25]) == COLOURS[0]  # bottom edge (y2 - 1 = 39)
    assert tuple(pixels[30, 25]) == (128, 128, 128)  # inside: untouched


def test_regions_are_matched_to_the_nearest_buffered_frame_within_sync_slop(rig):
    rig.publish_frame(rig.image_pub, "image", camera_image(header(100, 0), width=64, height=48))
    rig.publish_frame(rig.image_pub, "image", camera_image(header(100, 100_000_000), width=32, height=24))
    rig.regions_2d_pub.publish(Region2DArray(header=header(100, 80_000_000), regions=boxes((1, 1, 10, 10))))

    out = rig.next_descriptions()
    assert out.header.stamp.nanosec == 100_000_000  # 20 ms away, within the default 50 ms slop
    assert out.descriptions[0].text == "region 0 of 32x24 image"


def test_regions_with_no_frame_within_sync_slop_are_counted_as_unmatched(rig):
    image = camera_image(header(200, 0))
    rig.send_image(image, boxes((1, 1, 10, 10)), regions_header=header(200, 60_000_000))

    assert wait_for(lambda: rig.problems().get("unmatched_regions_2d") == 1)
    time.sleep(0.2)
    assert rig.descriptions == []


@pytest.mark.parametrize("rig", [{"max_regions": 3}], indirect=True)
def test_regions_beyond_max_regions_are_dropped_and_counted(rig):
    rig.send_image(camera_image(header(300, 0)), boxes(*[(i, i, 10, 10) for i in range(5)]))

    out = rig.next_descriptions()
    assert [d.id for d in out.descriptions] == ["det-0", "det-1", "det-2"]
    assert rig.problems()["too_many_regions"] == 1


def test_the_service_describes_image_and_cloud_regions_on_demand(rig):
    image = camera_image(header(400, 0), width=64, height=48)
    cloud = lidar_cloud(header(400, 0, "lidar"), points=100)
    request = DescribeRegions.Request(image=image, regions_2d=boxes((0, 0, 16, 16)),
                                      cloud=cloud, regions_3d=cubes((0, 0, 0)))

    response = rig.call(request)
    assert response.success, response.message
    assert response.descriptions.header == image.header
    assert [(d.id, d.text) for d in response.descriptions.descriptions] == [
        ("det-0", "region 0 of 64x48 image"), ("obj-0", "object 0 among 100 points")]


def test_the_service_says_what_to_fill_in_when_given_nothing(rig):
    response = rig.call(DescribeRegions.Request())
    assert not response.success
    assert response.message.startswith("nothing to describe: fill image + regions_2d")


def test_the_service_reports_an_unreadable_image_without_failing_the_cloud(rig):
    bad = camera_image(header(401, 0))
    bad.encoding = "yuv422"
    request = DescribeRegions.Request(image=bad, regions_2d=boxes((0, 0, 16, 16)),
                                      cloud=lidar_cloud(header(401, 0, "lidar")), regions_3d=cubes((0, 0, 0)))

    response = rig.call(request)
    assert not response.success
    assert "image encoding 'yuv422' is not supported" in response.message
    assert [d.id for d in response.descriptions.descriptions] == ["obj-0"]


class CrashingOnce(DescriberDouble):
    """The double, raising a bug's exception (not the ValueError of bad input) on its first image call."""

    crashed = False

    def describe_image_regions(self, image, boxes_xyxy_px, min_region_px=0.0):
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("the engine lost its session")
        return super().describe_image_regions(image, boxes_xyxy_px, min_region_px)


@pytest.mark.parametrize("describer", [CrashingOnce()])
def test_a_describer_crash_in_the_service_answers_the_call_and_is_counted(rig, describer):
    request = DescribeRegions.Request(image=camera_image(header(450, 0)), regions_2d=boxes((0, 0, 16, 16)))
    response = rig.call(request)
    assert not response.success
    assert response.message == "describing the request failed: RuntimeError('the engine lost its session')"
    assert rig.problems() == {"service_error": 1}

    response = rig.call(request)  # the service, and the executor under it, still work
    assert response.success, response.message
    assert [d.text for d in response.descriptions.descriptions] == ["region 0 of 64x48 image"]


@pytest.mark.parametrize("describer", [DescriberDouble(delay_s=1.0)])
def test_a_slow_service_call_does_not_stall_the_sensor_callbacks(rig, describer):
    future = rig.client.call_async(DescribeRegions.Request(
        image=camera_image(header(500, 0)), regions_2d=boxes((0, 0, 16, 16))))
    assert wait_for(lambda: describer.calls), "the service never reached the describer"

    rig.publish_frame(rig.image_pub, "image", camera_image(header(501, 0)))  # asserts it was received
    assert not future.done()  # the image got through while the service was still describing
    assert wait_for(future.done)


@pytest.mark.parametrize("describer", [DescriberDouble(delay_s=0.05)])
def test_the_worker_and_the_service_never_call_the_describer_at_the_same_time(rig, describer):
    futures = [rig.client.call_async(DescribeRegions.Request(
        image=camera_image(header(600, i)), regions_2d=boxes((0, 0, 16, 16)))) for i in range(3)]
    for i in range(3):
        rig.send_image(camera_image(header(601, i)), boxes((0, 0, 16, 16)))
    assert wait_for(lambda: all(f.done() for f in futures) and rig.node.worker.wait_idle(0))
    assert len(describer.calls) >= 4
    assert describer.overlapping_calls == 0


def test_diagnostics_report_backend_rates_latency_and_bad_inputs(rig):
    rig.send_image(camera_image(header(700, 0)), boxes((0, 0, 16, 16), (-50, -50, 10, 10)))
    rig.next_descriptions()

    assert wait_for(lambda: any(s.level == DiagnosticStatus.WARN for s in rig.diagnostics), timeout_s=5.0)
    status = next(s for s in rig.diagnostics if s.level == DiagnosticStatus.WARN)
    values = {kv.key: kv.value for kv in status.values}
    assert status.hardware_id == values["backend"] == "double"
    assert values["bad input: region_2d"] == "1"  # the box at (-50, -50) lies outside the image
    assert float(values["latency p50 (ms)"]) > 0.0
    assert float(values["latency p95 (ms)"]) >= float(values["latency p50 (ms)"])
    assert {"image rate (Hz)", "regions_2d rate (Hz)"} <= set(values)
    assert (values["camera jobs dropped"], values["lidar jobs dropped"]) == ("0", "0")
    assert status.message == "1 inputs skipped since the last report: see the log"



@pytest.mark.parametrize(("argument", "says"), [
    ("bundle:=/no/such/bundle", "region_describer: "),
    ("max_regions:=0", "region_describer: parameter max_regions is 0: it must be at least 1"),
    ("clock_jump:=0.0", "region_describer: parameter clock_jump is 0.0: it must be more than 0 seconds"),
    ("sensor_reliability:=lossy", "region_describer: parameter sensor_reliability is 'lossy': use one of "
                                  "best_effort, reliable"),
], ids=["unloadable bundle", "bad parameter", "bad clock_jump", "bad sensor_reliability"])
def test_the_node_entry_point_exits_1_with_one_line_when_it_cannot_start(capsys, argument, says):
    assert describer_node.main(["region_describer", "--ros-args", "-p", argument]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(says), err
    assert argument.partition(":=")[2] in err


@pytest.mark.parametrize("reliability", ["best_effort", "reliable"])
def test_the_sensor_subscriptions_take_their_qos_from_the_parameters(ros_context, reliability):
    node = RegionDescriber(describer=DescriberDouble(), context=ros_context, parameter_overrides=[
        Parameter("sensor_reliability", value=reliability), Parameter("sensor_depth", value=2)])
    try:
        sensors = [s for s in node.subscriptions if s.topic_name in ("/image", "/points")]
        assert len(sensors) == 2
        for subscription in sensors:
            assert subscription.qos_profile.depth == 2
            assert subscription.qos_profile.reliability == SENSOR_RELIABILITY[reliability]
    finally:
        node.destroy_node()


def test_the_sensor_qos_parameters_default_to_sensor_data_qos():
    assert SENSOR_RELIABILITY[PARAMETERS["sensor_reliability"][0]] == SENSOR_QOS.reliability
    assert PARAMETERS["sensor_depth"][0] == SENSOR_QOS.depth
