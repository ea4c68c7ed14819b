"""The demo and the description cache: the simulated detector tracks a scene's objects under one region id while
the scene stays in view, the monitor scores each frame against its own detection, and the summary says what the
cache served."""

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from regionblip_msgs.msg import RegionDescription, RegionDescriptionArray  # noqa: E402

from tools.demo import DemoMonitor  # noqa: E402
from tools.demo_cache import cache_summary  # noqa: E402
from tools.sim_sensors import CameraScene, Detection, SimulatedSensors  # noqa: E402

RED = {"size": "small", "colour": "red", "shape": "circle", "phrase": "a small red circle"}


class CountingScenes:
    """One box per scene, which it names; remembers which scenes were drawn."""

    def __init__(self):
        self.drawn = []

    def camera_scene(self, index, image_size):
        self.drawn.append(index)
        return CameraScene(np.zeros((image_size, image_size, 3), np.uint8), np.array([[10.0, 10.0, 40.0, 40.0]]),
                           [{"phrase": f"scene {index}"}])

    def lidar_scene(self, index, num_points):
        raise AssertionError("the camera-only test draws no LiDAR scene")


def test_a_tracked_object_keeps_its_region_id_while_its_scene_stays_in_view(ros_context):
    scenes, published = CountingScenes(), []
    sim = SimulatedSensors(scenes, context=ros_context, parameter_overrides=[
        Parameter("scene_frames", value=2), Parameter("first_index", value=7)])
    sim.regions_2d_pub.publish = lambda array: published.append(array.regions[0])
    for _ in range(4):
        sim.camera_tick()
    sim.stop()
    assert scenes.drawn == [7, 7, 8, 8]
    assert [region.id for region in published] == ["c0000-0", "c0000-0", "c0001-0", "c0001-0"]
    assert published[0].x != published[1].x  # fresh detector noise on every frame
    sim.destroy_node()


def test_scene_frames_below_1_is_refused(ros_context):
    with pytest.raises(ValueError, match="parameter scene_frames is 0: it must be at least 1"):
        SimulatedSensors(CountingScenes(), context=ros_context,
                         parameter_overrides=[Parameter("scene_frames", value=0)])


def answer(stamp_ns: int, text: str, cached: bool) -> RegionDescriptionArray:
    array = RegionDescriptionArray(descriptions=[RegionDescription(id="l0000-0", text=text, cached=cached,
                                                                   modality="pointcloud_region")], inference_ms=12.0)
    array.header.stamp = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
    return array


def test_the_monitor_scores_one_region_id_on_each_frame_against_that_frames_detection(ros_context, tmp_path):
    monitor = DemoMonitor(tmp_path, context=ros_context)
    for index in range(2):
        monitor.add_detection(Detection("lidar", index, 1_000_000_000 + index, 0.0, {"l0000-0": RED}, None))
    monitor.on_descriptions(answer(1_000_000_001, "a small red circle", cached=True))   # the later frame first
    monitor.on_descriptions(answer(1_000_000_000, "a small red square", cached=False))
    assert monitor.unmatched == 0
    assert [(frame["index"], frame["regions"][0]["correct"], frame["regions"][0]["cached"])
            for frame in monitor.frames["lidar"]] == [(1, True, True), (0, False, False)]
    monitor.destroy_node()


def test_the_cache_summary_counts_cached_regions_and_prices_them_at_the_fresh_ones_mean():
    frames = [{"inference_ms": 30.0, "regions": [{"cached": False}, {"cached": False}, {"cached": True}]},
              {"inference_ms": 0.0, "regions": [{"cached": True}, {"cached": True}]}]
    assert cache_summary(frames) == {"regions_cached": 3, "cached_share": 0.6, "describer_ms": 30.0,
                                     "describer_ms_per_fresh_region": 15.0, "describer_ms_saved_estimate": 45.0}
    assert cache_summary([])["cached_share"] is None
