"""The region_describer never goes blind and never dies quietly: clock jumps, stamps from the future,
unexpected errors in callbacks, the service and the worker, what is published when nothing can be described,
and a signal in the middle of a long job."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from regionblip_msgs.msg import Region2DArray  # noqa: E402
from regionblip_msgs.srv import DescribeRegions  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import NodeRig, boxes, camera_image, cubes, header, lidar_cloud, wait_for  # noqa: E402
from regionblip_ros.spinning import spin_until_signal  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOX = (4, 4, 20, 20)


def rig_with(ros_context, describer=None, **parameters):
    return NodeRig(ros_context, describer or DescriberDouble(), **parameters)


@pytest.fixture
def rig(ros_context):
    rig = rig_with(ros_context)
    yield rig
    rig.close()


def described_stamps(rig: NodeRig) -> list[int]:
    return [d.header.stamp.sec for d in rig.descriptions if d.descriptions]


def send_and_wait(rig: NodeRig, sec: int) -> None:
    """One image with one region, then wait until its answer is published."""
    count = len(rig.descriptions)
    rig.send_image(camera_image(header(sec)), boxes(BOX))
    assert wait_for(lambda: len(rig.descriptions) > count), f"nothing was published for the frame at {sec} s"


# --- clocks ----------------------------------------------------------------------------------------------------


def test_after_the_clock_jumps_back_every_following_frame_is_described(rig):
    for sec in range(1000, 1031):  # a full frame buffer (30), as after a bag has played once
        rig.publish_frame(rig.image_pub, "image", camera_image(header(sec)))
    for sec in range(1, 6):  # the bag loops
        send_and_wait(rig, sec)
    assert described_stamps(rig) == [1, 2, 3, 4, 5]
    assert rig.problems()["clock_jump"] == 1


def test_frames_stamped_far_ahead_of_the_node_clock_are_dropped_and_counted(rig):
    now = int(time.time())
    for second in range(35):
        rig.publish_frame(rig.image_pub, "image", camera_image(header(now + 3600 + second)))
    assert rig.problems()["stamp_ahead"] == 35
    send_and_wait(rig, now)
    assert described_stamps(rig) == [now]


def test_without_the_future_check_a_real_frame_after_future_ones_still_restarts_the_buffer(ros_context):
    rig = rig_with(ros_context, max_stamp_ahead=0.0)
    try:
        now = int(time.time())
        for second in range(35):
            rig.publish_frame(rig.image_pub, "image", camera_image(header(now + 3600 + second)))
        send_and_wait(rig, now)
        assert described_stamps(rig) == [now]
        assert rig.problems() == {"clock_jump": 1, "stamp_out_of_order": 1}
    finally:
        rig.close()


def test_a_frame_older_than_a_full_buffer_is_dropped_and_counted_as_late(ros_context):
    rig = rig_with(ros_context, frame_buffer=3)
    try:
        for tenths in (1, 2, 3):
            rig.publish_frame(rig.image_pub, "image", camera_image(header(100, tenths * 100_000_000)))
        rig.publish_frame(rig.image_pub, "image", camera_image(header(100, 0)))  # late, but no clock jump
        assert rig.problems()["late_frame"] == 1
    finally:
        rig.close()


# --- unexpected errors ----------------------------------------------------------------------------------------


class BrokenCamera(DescriberDouble):
    """Fails on images as a GPU runtime might (not a ValueError); clouds still work."""

    def describe_image_regions(self, image, boxes_xyxy_px, min_region_px: float = 0.0):
        raise RuntimeError("CUDA error: out of memory")


def test_an_unexpected_error_in_a_subscription_callback_is_counted_and_the_node_carries_on(rig, monkeypatch):
    def broken(topic):
        raise RuntimeError("bookkeeping failed")

    monkeypatch.setattr(rig.node.stats, "received", broken)
    rig.image_pub.publish(camera_image(header(10)))
    assert wait_for(lambda: rig.problems().get("callback_error", 0) >= 1), rig.problems()
    monkeypatch.undo()
    send_and_wait(rig, 11)
    assert described_stamps(rig) == [11]


def test_an_unexpected_error_in_the_service_answers_success_false_and_the_node_stays_up(ros_context):
    rig = rig_with(ros_context, BrokenCamera())
    try:
        request = DescribeRegions.Request(image=camera_image(header(1)), regions_2d=boxes(BOX))
        for attempt in (1, 2):
            response = rig.call(request)
            assert not response.success
            assert response.message == "describing the request failed: RuntimeError('CUDA error: out of memory')"
            assert rig.problems()["service_error"] == attempt
        cloud_only = DescribeRegions.Request(cloud=lidar_cloud(header(2, 0, "lidar")), regions_3d=cubes((0, 0, 0)))
        assert rig.call(cloud_only).success
    finally:
        rig.close()


def test_an_unexpected_error_in_the_worker_publishes_an_empty_answer_and_is_counted(ros_context):
    rig = rig_with(ros_context, BrokenCamera())
    try:
        send_and_wait(rig, 3)
        answer = rig.descriptions[-1]
        assert answer.header.stamp.sec == 3 and list(answer.descriptions) == []
        assert rig.problems()["worker_error"] == 1
        rig.send_cloud(lidar_cloud(header(4, 0, "lidar")), cubes((0, 0, 0)))
        assert wait_for(lambda: any(d.header.stamp.sec == 4 and d.descriptions for d in rig.descriptions))
    finally:
        rig.close()


# --- what is published when nothing can be described ----------------------------------------------------------


def test_an_unreadable_image_is_answered_with_an_empty_array_carrying_its_header(rig):
    image = camera_image(header(5))
    image.encoding = "yuv422"
    rig.send_image(image, boxes(BOX))
    answer = rig.next_descriptions()
    assert answer.header == image.header and list(answer.descriptions) == []
    assert rig.problems()["image"] == 1


def test_a_frame_whose_every_region_is_refused_is_answered_with_an_empty_array_too(rig):
    image = camera_image(header(6))
    rig.send_image(image, boxes((500, 500, 10, 10)))
    answer = rig.next_descriptions()
    assert answer.header == image.header and list(answer.descriptions) == []
    assert rig.problems()["region_2d"] == 1


def test_a_region_array_matching_no_frame_gets_no_answer_and_is_counted(rig):
    send_and_wait(rig, 7)
    rig.regions_2d_pub.publish(Region2DArray(header=header(9), regions=boxes(BOX)))
    assert wait_for(lambda: rig.problems().get("unmatched_regions_2d", 0) == 1)
    assert len(rig.descriptions) == 1


# --- stopping -------------------------------------------------------------------------------------------------


def test_an_executor_that_dies_on_an_error_exits_1_and_says_why(ros_context, capfd):
    node = rclpy.create_node("doomed", context=ros_context)

    def explode():
        raise RuntimeError("boom")

    node.create_timer(0.01, explode)
    assert spin_until_signal([node], ros_context, num_threads=2) == 1
    assert "doomed: the executor stopped on an unexpected error: RuntimeError('boom')" in capfd.readouterr().err


SLOW_BRINGUP = (  # bringup with a describer whose every call takes a minute unless cancelled
    f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
    "from describer_double import DescriberDouble; from regionblip_ros import bringup; "
    "sys.exit(bringup.main(sys.argv[1:], describer=DescriberDouble(delay_s=60.0)))"
)


def test_sigterm_during_a_long_job_exits_0_within_two_seconds(tmp_path, ros_context):
    namespace = "/t_" + uuid.uuid4().hex[:10]
    params = tmp_path / "describe.yaml"
    params.write_text(f"{namespace}/region_describer:\n  ros__parameters: {{enable_lidar: false}}\n")
    process = subprocess.Popen([sys.executable, "-c", SLOW_BRINGUP, "--params", str(params)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        client_node = rclpy.create_node("slow_client", context=ros_context)
        client = client_node.create_client(DescribeRegions, f"{namespace}/describe_regions")
        assert client.wait_for_service(timeout_sec=20.0), "bringup never offered describe_regions"
        future = client.call_async(DescribeRegions.Request(image=camera_image(header(1)), regions_2d=boxes(BOX)))
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(client_node)
        executor.spin_until_future_complete(future, timeout_sec=1.0)  # the call is now in its minute-long job
        assert not future.done()
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20.0)
        elapsed = time.monotonic() - start
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert elapsed < 2.0, f"shutdown took {elapsed:.1f} s"
    assert "Traceback" not in err
