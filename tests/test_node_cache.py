"""The description cache in the node: a tracked region that stays put is published from the cache, marked cached,
under the new frame's header, without calling the describer; what is new, moved or refreshed is described."""

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from regionblip_msgs.srv import DescribeRegions  # noqa: E402

from describer_double import DescriberDouble  # noqa: E402
from node_rig import NodeRig, boxes, camera_image, cubes, header, lidar_cloud, wait_for  # noqa: E402
from regionblip_ros import describer_node  # noqa: E402
from regionblip_ros.description_cache import DescriptionCache  # noqa: E402
from regionblip_ros.frames import REGION_2D, describe_camera_frame, describe_lidar_frame  # noqa: E402


@pytest.fixture
def describer():
    return DescriberDouble()


def new_cache() -> DescriptionCache:
    return DescriptionCache(iou_threshold=0.7, ttl_s=2.0, max_entries=64)


def camera(describer, cache, regions, sec: int, nanosec: int = 0):
    return describe_camera_frame(describer, camera_image(header(sec, nanosec)), regions, max_regions=32,
                                 min_region_px=4.0, cache=cache)


def published(result) -> list[tuple[str, str, bool]]:
    return [(d.id, d.text, d.cached) for d in result.descriptions.descriptions]


# --- one frame at a time (regionblip_ros.frames) ----------------------------------------------------------------

def test_a_frame_whose_regions_are_all_cached_never_calls_the_describer(describer):
    cache = new_cache()
    first = camera(describer, cache, boxes((2, 3, 20, 10), (30, 20, 16, 16)), 10)
    second = camera(describer, cache, boxes((2, 3, 20, 10), (30, 20, 16, 16)), 10, 100_000_000)

    assert describer.calls == [("describe_image_regions", 2)]
    texts = ["region 0 of 64x48 image", "region 1 of 64x48 image"]
    assert published(first) == [("det-0", texts[0], False), ("det-1", texts[1], False)]
    assert published(second) == [("det-0", texts[0], True), ("det-1", texts[1], True)]
    assert [d.score for d in second.descriptions.descriptions] == [-0.5, -1.5]
    assert second.descriptions.header == header(10, 100_000_000)  # the new frame's, not the cached one's
    assert second.descriptions.inference_ms == 0.0
    assert second.boxes.shape == (2, 4)  # drawn like described ones


def test_only_the_regions_the_cache_cannot_serve_reach_the_describer_and_the_input_order_is_kept(describer):
    cache = new_cache()
    camera(describer, cache, boxes((2, 3, 20, 10), (30, 20, 16, 16), (40, 0, 8, 30)), 10)
    regions = boxes((2, 3, 20, 10), (36, 20, 16, 16), (40, 0, 8, 30), (4, 30, 12, 12))  # det-1 moved, det-3 new
    regions[2].refresh = True
    second = camera(describer, cache, regions, 11)

    assert describer.calls == [("describe_image_regions", 3), ("describe_image_regions", 3)]
    assert published(second) == [  # the double numbers the regions of each call: 0..2 are det-1, det-2, det-3
        ("det-0", "region 0 of 64x48 image", True), ("det-1", "region 0 of 64x48 image", False),
        ("det-2", "region 1 of 64x48 image", False), ("det-3", "region 2 of 64x48 image", False)]
    assert cache.counts()["misses: moved"] == cache.counts()["misses: refresh"] == 1


def test_a_new_prompt_or_an_expired_entry_is_described_again(describer):
    cache = new_cache()
    camera(describer, cache, boxes((2, 3, 20, 10)), 10)
    prompted = boxes((2, 3, 20, 10))
    prompted[0].prompt = "Question: what colour is it? Answer:"
    assert published(camera(describer, cache, prompted, 11))[0][2] is False
    assert published(camera(describer, cache, prompted, 12))[0][2] is True
    assert published(camera(describer, cache, prompted, 15))[0][2] is False  # 3 s later: past the 2 s TTL
    assert len(describer.calls) == 3


def test_a_refused_region_is_not_cached_and_is_refused_again(describer):
    cache = new_cache()
    for sec in (10, 11):
        result = camera(describer, cache, boxes((100, 100, 10, 10)), sec)  # outside the 64x48 image
        assert [problem.kind for problem in result.problems] == [REGION_2D]
    assert len(cache) == 0 and len(describer.calls) == 2


def test_cloud_regions_are_served_from_the_cache_too(describer):
    cache = new_cache()
    describe_lidar_frame(describer, lidar_cloud(header(20, 0, "lidar")), cubes((1, 2, 0.5)), max_regions=32,
                         cache=cache)
    second = describe_lidar_frame(describer, lidar_cloud(header(20, 200_000_000, "lidar")), cubes((1.02, 2, 0.5)),
                                  max_regions=32, cache=cache)
    assert describer.calls == [("describe_point_regions", 1)]
    assert published(second) == [("obj-0", "object 0 among 500 points", True)]
    assert second.descriptions.header == header(20, 200_000_000, "lidar")


# --- the running node ---------------------------------------------------------------------------------------------

@pytest.fixture
def rig(ros_context, describer, request):
    rig = NodeRig(ros_context, describer, **getattr(request, "param", {}))
    yield rig
    rig.close()


def send_twice(rig) -> tuple:
    """The same regions on two frames 100 ms apart, each answered before the next is sent."""
    first, second = camera_image(header(800, 0)), camera_image(header(800, 100_000_000))
    rig.send_image(first, boxes((2, 3, 20, 10), (30, 20, 16, 16)))
    rig.next_descriptions(1)
    rig.send_image(second, boxes((2, 3, 20, 10), (30, 20, 16, 16)))
    return first, second, rig.next_descriptions(1), rig.next_descriptions(2)


def test_the_node_publishes_a_second_identical_frame_from_the_cache_with_the_new_stamp(rig, describer):
    _, second, _, out = send_twice(rig)

    assert out.header == second.header
    assert [(d.id, d.text, d.cached) for d in out.descriptions] == [
        ("det-0", "region 0 of 64x48 image", True), ("det-1", "region 1 of 64x48 image", True)]
    assert describer.calls == [("describe_image_regions", 2)]
    assert wait_for(lambda: any({"description cache hits": "2", "description cache misses: new": "2"}.items()
                                <= {kv.key: kv.value for kv in status.values}.items() for status in rig.diagnostics),
                    timeout_s=5.0), "/diagnostics never reported the cache's hits and misses"


@pytest.mark.parametrize("rig", [{"description_cache": False}], indirect=True)
def test_with_the_cache_off_every_frame_is_described(rig, describer):
    _, _, _, out = send_twice(rig)
    assert [d.cached for d in out.descriptions] == [False, False]
    assert describer.calls == [("describe_image_regions", 2)] * 2
    assert wait_for(lambda: rig.diagnostics, timeout_s=5.0)
    assert not any(kv.key.startswith("description cache") for kv in rig.diagnostics[-1].values)


def test_the_service_always_describes_afresh(rig, describer):
    send_twice(rig)
    request = DescribeRegions.Request(image=camera_image(header(800, 200_000_000)),
                                      regions_2d=boxes((2, 3, 20, 10), (30, 20, 16, 16)))
    response = rig.call(request)
    assert response.success, response.message
    assert [d.cached for d in response.descriptions.descriptions] == [False, False]
    assert describer.calls == [("describe_image_regions", 2)] * 2  # the topic's first frame, then the service


@pytest.mark.parametrize(("argument", "says"), [
    ("cache_iou:=1.5", "parameter cache_iou is 1.5: it must be from 0 to 1"),
    ("cache_ttl:=-1.0", "parameter cache_ttl is -1.0: it must be 0 or more"),
    ("cache_size:=0", "parameter cache_size is 0: it must be at least 1"),
])
def test_cache_parameters_out_of_range_stop_the_node_with_one_line(capsys, argument, says):
    assert describer_node.main(["region_describer", "--ros-args", "-p", argument]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"region_describer: {says}"


def test_only_the_described_regions_prompts_reach_the_describer(describer):
    cache = new_cache()
    first = boxes((2, 3, 20, 10), (30, 20, 16, 16))
    first[0].prompt = "a"
    camera(describer, cache, first, 10)
    second = boxes((2, 3, 20, 10), (30, 20, 16, 16), (4, 30, 12, 12))  # det-0 and det-1 cached, det-2 new
    second[0].prompt, second[2].prompt = "a", "a small"
    camera(describer, cache, second, 11)
    assert describer.prompts == [["a", ""], ["a small"]]
