"""tools/shared_scene.py and the synchronized simulated sensors: one world, seen by the camera and the LiDAR
through a known extrinsic, laid out where the default image model works."""

import numpy as np
import pytest

from regionblip_ros.projection import box_vertices, pinhole_camera, project_boxes, rigid_transform
from tools.shared_scene import (
    CAMERA_POSITION, LIDAR_TO_CAMERA, SILHOUETTE, SharedScenes, camera_matrix, sample_world,
)
from training.data.boxes import yaw_rotation
from training.data.synthetic_images import GRID_CELLS, RADIUS_FRACTION
from training.data.synthetic_points import WIDTH_M

WORLDS = range(40)


def test_the_extrinsic_puts_the_camera_at_its_position_looking_down():
    lidar_to_camera = rigid_transform(LIDAR_TO_CAMERA)
    np.testing.assert_allclose(np.linalg.inv(lidar_to_camera)[:3, 3], CAMERA_POSITION)  # camera centre, LiDAR frame
    np.testing.assert_allclose(lidar_to_camera[:3, :3] @ [0, 0, -1], [0, 0, 1])  # LiDAR down = optical axis


@pytest.mark.parametrize("image_size", [96, 192])
def test_each_lidar_box_projects_onto_the_shape_drawn_for_it(image_size):
    scenes = SharedScenes()
    camera = pinhole_camera(camera_matrix(image_size), image_size, image_size)
    for index in WORLDS:
        image_view, lidar_view = scenes.camera_scene(index, image_size), scenes.lidar_scene(index, 512)
        assert image_view.image.shape == (image_size, image_size, 3) and len(lidar_view.points) == 512
        vertices = box_vertices(lidar_view.centers, np.stack([yaw_rotation(y) for y in lidar_view.yaws]),
                                lidar_view.sizes)
        boxes, problems = project_boxes(camera, rigid_transform(LIDAR_TO_CAMERA), vertices)
        assert problems == {}
        # within 2 px of the tight box of the drawn pixels, at 96 px (the drawn shapes are rasterised)
        np.testing.assert_allclose(boxes, image_view.boxes_xyxy, atol=2.0 * image_size / 96)


def test_both_views_name_the_same_objects_in_the_same_order():
    scenes = SharedScenes()
    for index in WORLDS:
        camera_truths, lidar_truths = scenes.camera_scene(index, 96).truths, scenes.lidar_scene(index, 256).truths
        assert len(camera_truths) == len(lidar_truths) >= 1
        for seen, scanned in zip(camera_truths, lidar_truths):
            assert (seen["size"], seen["colour"], seen["shape"]) == \
                (scanned["size"], scanned["colour"], SILHOUETTE[scanned["shape"]])


def test_objects_sit_on_the_image_models_grid_at_its_trained_radii_and_at_the_lidar_models_widths():
    cell = 96 / GRID_CELLS
    for index in WORLDS:
        primitives, silhouettes = sample_world(index)
        for primitive, silhouette in zip(primitives, silhouettes):
            assert (silhouette.cx / cell - 0.5) % 1 == pytest.approx(0) and (silhouette.cy / cell - 0.5) % 1 == \
                pytest.approx(0)
            low, high = RADIUS_FRACTION[silhouette.size]
            assert low - 1e-3 <= silhouette.radius / 96 <= high + 1e-3
            low, high = WIDTH_M[primitive.size]
            assert low <= primitive.width <= high
            assert primitive.yaw % (np.pi / 2) == pytest.approx(0)


def test_a_world_is_the_same_on_every_call_and_worlds_differ():
    assert sample_world(3) == sample_world(3)
    assert sample_world(3) != sample_world(4)
    np.testing.assert_array_equal(SharedScenes().camera_scene(3, 96).image, SharedScenes().camera_scene(3, 96).image)


# --- the synchronized simulated sensors ------------------------------------------------------------------------


@pytest.mark.ros
def test_synchronized_sensors_scan_every_nth_camera_frame_with_its_stamp_scene_and_camera_info(ros_context):
    pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from regionblip_ros.sync import stamp_to_ns
    from tools.sim_sensors import SimulatedSensors
    sim = SimulatedSensors(SharedScenes(), context=ros_context, parameter_overrides=[
        Parameter("synchronized", value=True), Parameter("camera_rate_hz", value=10.0),
        Parameter("lidar_rate_hz", value=5.0)])
    sent = {"image": [], "camera_info": [], "points": []}
    sim.image_pub.publish, sim.camera_info_pub.publish, sim.points_pub.publish = \
        sent["image"].append, sent["camera_info"].append, sent["points"].append
    try:
        for _ in range(4):
            sim.synchronized_tick()
        stamps = {topic: [stamp_to_ns(m.header.stamp) for m in msgs] for topic, msgs in sent.items()}
        assert stamps["camera_info"] == stamps["image"] and len(stamps["image"]) == 4
        assert stamps["points"] == [stamps["image"][0], stamps["image"][2]]
        assert [m.header.frame_id for m in sent["points"]] == ["lidar", "lidar"]
        info = sent["camera_info"][0]
        np.testing.assert_allclose(np.reshape(info.k, (3, 3)), camera_matrix(96))
        assert (info.width, info.height) == (96, 96)
        scanned = SharedScenes().lidar_scene(2, 1024).points  # camera frame 2's world, as its scan shows it
        np.testing.assert_array_equal(np.frombuffer(bytes(sent["points"][1].data), np.float32).reshape(-1, 3),
                                      scanned.astype(np.float32))
    finally:
        sim.destroy_node()


@pytest.mark.ros
@pytest.mark.parametrize("camera_hz, lidar_hz", [(10.0, 3.0), (5.0, 10.0), (10.0, 0.0)])
def test_synchronized_sensors_refuse_rates_that_are_not_whole_multiples(ros_context, camera_hz, lidar_hz):
    pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from tools.sim_sensors import SimulatedSensors
    with pytest.raises(ValueError, match="whole multiple"):
        SimulatedSensors(SharedScenes(), context=ros_context, parameter_overrides=[
            Parameter("synchronized", value=True), Parameter("camera_rate_hz", value=camera_hz),
            Parameter("lidar_rate_hz", value=lidar_hz)])
