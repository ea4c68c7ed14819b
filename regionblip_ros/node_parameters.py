"""The region_describer's parameters: every default and meaning in one table, and the checks of their values.

config/describe.yaml and config/demo.yaml set only what must differ, and the launch file's arguments default to these
values (tests/test_launch.py reads the table as literals; tests/test_bringup.py checks the YAML files against it).
"""
from rclpy.qos import QoSReliabilityPolicy

SENSOR_RELIABILITY = {"best_effort": QoSReliabilityPolicy.BEST_EFFORT, "reliable": QoSReliabilityPolicy.RELIABLE}

# name: (default, description)
PARAMETERS = {
    "bundle": ("bundles/default", "exported model bundle directory (python -m export.onnx)"),
    "backend": ("onnxruntime", "inference backend: onnxruntime | tensorrt | torch"),
    "device": ("cpu", "inference device: cpu | cuda"),
    "threads": (0, "ONNX Runtime intra-op threads; 0 = the count measured for the bundle on this machine "
                   "(python -m runtime.cli --bundle B --tune-threads), else ONNX Runtime's default (all cores)"),
    "enable_camera": (True, "subscribe image + regions_2d"),
    "enable_lidar": (True, "subscribe points + regions_3d"),
    "enable_detections": (True, "where vision_msgs is installed, also take a detector's Detection2DArray on "
                                "detections_2d (camera) and Detection3DArray on detections_3d (lidar) as regions"),
    "max_regions": (32, "regions described per frame; extra regions are dropped and counted"),
    "max_new_tokens": (20, "longest description, in tokens"),
    "num_beams": (1, "beam search width; 1 = greedy"),
    "sync_slop": (0.05, "seconds a region array's stamp may differ from its frame's, and with fuse_camera an "
                        "image's from its cloud's"),
    "frame_buffer": (30, "frames kept per sensor for stamp matching"),
    "clock_jump": (2.0, "a frame stamped this many seconds before the newest buffered one means the clock "
                        "jumped back (a bag loop, a simulator restart): the sensor's frame buffer restarts from it"),
    "max_stamp_ahead": (10.0, "frames stamped more than this many seconds ahead of the node's clock are dropped "
                              "and counted (a publisher's clock is wrong); 0 turns the check off"),
    "sensor_reliability": ("best_effort", "QoS reliability of the image and points subscriptions: best_effort "
                                          "(sensor data QoS) | reliable"),
    "sensor_depth": (5, "QoS history depth of the image and points subscriptions (sensor data QoS: 5)"),
    "min_region_px": (4.0, "2D regions narrower or lower than this (pixels, inside the image) are skipped"),
    "publish_markers": (True, "publish RViz text markers for 3D regions on markers"),
    "publish_annotated": (True, "publish the image with boxes and descriptions on annotated_image"),
    # Why these defaults: README, "Description cache".
    "description_cache": (True, "serve a tracked region (same id, prompt and frame_id) from the description cache "
                                "while its box stays put; the describe_regions service always describes afresh"),
    "cache_iou": (0.7, "a cached description is served only while the region's box has an IoU of at least this "
                       "with the box it was described with (3D: the axis-aligned bounds of its corners)"),
    "cache_ttl": (2.0, "seconds (by frame stamps) a cached description may be served before the region is "
                       "described again"),
    "cache_size": (1024, "descriptions the cache holds; the least recently used is evicted beyond it"),
    "fuse_camera": (False, "also describe where each LiDAR region lands in the camera frame nearest its cloud "
                           "(camera_text, camera_score, region_2d); needs camera_info, and lidar_to_camera or tf2"),
    "lidar_to_camera": ([], "x y z qx qy qz qw taking LiDAR points into the camera optical frame, as tf2's "
                            "lookup_transform(camera_frame, lidar_frame) gives it; empty: look it up in tf2"),
}


def check_parameters(value: dict) -> None:
    """Raise ValueError naming the first parameter whose value is out of its range."""
    for name in ("max_regions", "frame_buffer", "max_new_tokens", "num_beams", "sensor_depth", "cache_size"):
        if value[name] < 1:
            raise ValueError(f"parameter {name} is {value[name]}: it must be at least 1")
    for name in ("sync_slop", "min_region_px", "max_stamp_ahead", "cache_ttl"):
        if value[name] < 0:
            raise ValueError(f"parameter {name} is {value[name]}: it must be 0 or more")
    if not 0.0 <= value["cache_iou"] <= 1.0:
        raise ValueError(f"parameter cache_iou is {value['cache_iou']}: it must be from 0 to 1")
    if value["clock_jump"] <= 0:
        raise ValueError(f"parameter clock_jump is {value['clock_jump']}: it must be more than 0 seconds")
    if value["sensor_reliability"] not in SENSOR_RELIABILITY:
        raise ValueError(f"parameter sensor_reliability is {value['sensor_reliability']!r}: use one of "
                         f"{', '.join(SENSOR_RELIABILITY)}")
