"""What every layer agrees on: the modality table, box and corner conventions, preprocessing constants,
generation defaults and the bundle manifest.

The ground floor under training/, export/, runtime/ and regionblip_ros/: numpy and PIL only, no torch and no
ROS, so each layer imports it downward and none re-states it.
"""
