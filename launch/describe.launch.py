"""Start the region_describer node: camera + LiDAR + regions in, descriptions out.

ros2 launch regionblip_ros describe.launch.py bundle:=/path/to/bundle \
    image:=/camera/color/image_raw points:=/lidar/points detections_2d:=/yolo/detections

Where pip-only ROS 2 has no `ros2 launch`, run the same node from the same YAML with
python -m regionblip_ros.bringup --params config/describe.yaml
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

TOPICS = ("image", "camera_info", "regions_2d", "points", "regions_3d", "detections_2d", "detections_3d",
          "descriptions", "markers", "annotated_image")


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument("bundle", default_value="bundles/default",
                              description="exported model bundle directory"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare("regionblip_ros"), "config", "describe.yaml"]),
            description="node parameters (YAML)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_camera", default_value="true",
                              description="describe camera regions"),
        DeclareLaunchArgument("use_lidar", default_value="true",
                              description="describe LiDAR regions"),
    ] + [DeclareLaunchArgument(topic, default_value=topic, description=f"the {topic} topic")
         for topic in TOPICS]

    # The file's parameters first, then bundle / enable_camera / enable_lidar from the arguments, which win.
    # Those arguments default to the node's own defaults (PARAMETERS in regionblip_ros/node_parameters.py;
    # tests/test_launch.py keeps them equal); every other parameter is the file's or the node's default.
    describer = Node(
        package="regionblip_ros",
        executable="region_describer",
        name="region_describer",
        namespace=LaunchConfiguration("namespace"),
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "bundle": LaunchConfiguration("bundle"),
                "enable_camera": LaunchConfiguration("use_camera"),
                "enable_lidar": LaunchConfiguration("use_lidar"),
            },
        ],
        remappings=[(topic, LaunchConfiguration(topic)) for topic in TOPICS],
        # Full-HD images only cross Fast DDS whole with a larger shared-memory segment (docs/transport.md):
        # the node publishes annotated_image; the camera driver needs the same variable for image.
        additional_env={"FASTDDS_DEFAULT_PROFILES_FILE": PathJoinSubstitution(
            [FindPackageShare("regionblip_ros"), "config", "fastdds.xml"])},
        output="screen",
    )
    return LaunchDescription(arguments + [describer])
