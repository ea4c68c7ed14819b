"""One 3-D scene seen by both simulated sensors: the LiDAR's synthetic primitives on a ground plane, and a camera at
a known pose that sees the same objects in their colours.

Scene index i is one world: SharedScenes.camera_scene(i) and .lidar_scene(i) are two views of it, and object k is
region k of both (tools/sim_sensors.py numbers regions so). The camera publishes its intrinsics (CameraInfo K) with
each image; LIDAR_TO_CAMERA is the extrinsic, in the region_describer's lidar_to_camera form.

Simulator choices, made because of the default image model's limits, not because a camera works so:
- models/default knows only 2-D shapes (circle, square, triangle, diamond, cross) drawn by
  training/data/synthetic_images.py: flat colours on a light noisy background, centred on its 8 x 8 patch grid, at
  two radius ranges. Off that grid, or on other backgrounds, it describes them badly (issue #20;
  docs/experiments.md: image-region exact match 0.971 on the grid, 0.272 with the shapes moved 2 px).
- So the camera looks straight down from CAMERA_HEIGHT_M with a narrow lens (about 8 degrees of view): almost an
  orthographic view, in which each object shows its top-down silhouette, drawn as the image model's 2-D shape of
  that silhouette (SILHOUETTE: sphere, cylinder and cone are circles; cube and pyramid squares). Every object is
  turned a multiple of 90 degrees about its vertical, so that a square stands upright in the image and a projected
  3-D box is as tight as a 2-D detector's box (a box turned 45 degrees projects up to 1.4 times wider than its
  object, which the image model never saw in training). The camera's own shape word is a 2-D one ("a large red
  square" for a cube); the fused description takes its shape from the LiDAR.
- The world is laid out in the image first, by the image generator itself (sample_layout: grid cell, size, colour,
  radius, non-overlapping), and each object is then placed in 3-D where its box centre projects to its cell centre,
  at the width whose silhouette projects to the drawn radius, kept within the LiDAR generator's width range for its
  size word. The image is drawn by the image generator's renderer: no shading, no perspective on the silhouettes,
  which are within a pixel of the objects' true projections from this height.
"""

import numpy as np

from regionblip_ros.projection import back_project, pinhole_camera, rigid_transform
from tools.sim_sensors import CameraScene, LidarScene
from training.data.splits import sample_rng
from training.data.synthetic_images import ShapeSpec, render, sample_layout
from training.data.synthetic_points import HEIGHT_RATIO, WIDTH_M, PrimitiveSpec, region_caption, render_scene
from training.data.vocabulary import POINT_SHAPES, object_phrase

LAYOUT_SIZE = 96            # the default model's image side: worlds are laid out on its grid; other sizes scale it
CAMERA_HEIGHT_M = 20.0
FOCAL_PX = 666.0            # at LAYOUT_SIZE: 34 px per metre at the objects' typical centre height (0.4 m)
CAMERA_POSITION = (0.3, -0.2, CAMERA_HEIGHT_M)  # in the LiDAR frame: a little off the LiDAR's vertical
# The LiDAR frame (x right, y forward, z up: training/data/synthetic_points.py) into the camera optical frame of a
# camera looking down with image x along LiDAR x and image up along LiDAR y: R = diag(1, -1, -1) (180 degrees about x,
# quaternion (1, 0, 0, 0)), t = -R @ CAMERA_POSITION. The region_describer's lidar_to_camera parameter.
LIDAR_TO_CAMERA = (-CAMERA_POSITION[0], CAMERA_POSITION[1], CAMERA_POSITION[2], 1.0, 0.0, 0.0, 0.0)
SILHOUETTE = {"sphere": "circle", "cylinder": "circle", "cone": "circle", "cube": "square", "pyramid": "square"}
# The half-extent shape_mask draws for each silhouette, per unit of ShapeSpec.radius (a square fills 0.85 of it).
DRAWN_HALF_EXTENT = {"circle": 1.0, "square": 0.85}


def camera_matrix(image_size: int) -> np.ndarray:
    """The camera's K (3, 3) at `image_size`, in ROS pixels (centres at integers): the principal point mid-image."""
    focal, centre = FOCAL_PX * image_size / LAYOUT_SIZE, image_size / 2 - 0.5
    return np.array([[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]])


def sample_world(index: int) -> tuple[list[PrimitiveSpec], list[ShapeSpec]]:
    """World `index` of the eval split: the 3-D primitives and, object for object, their silhouettes as drawn at
    LAYOUT_SIZE."""
    rng = sample_rng("eval", "shared_scene", index)
    camera = pinhole_camera(camera_matrix(LAYOUT_SIZE), LAYOUT_SIZE, LAYOUT_SIZE)
    camera_to_lidar = np.linalg.inv(rigid_transform(LIDAR_TO_CAMERA))
    primitives, silhouettes = [], []
    for spec in sample_layout(rng, LAYOUT_SIZE):
        shape = POINT_SHAPES[rng.integers(len(POINT_SHAPES))]
        silhouette, ratio = SILHOUETTE[shape], HEIGHT_RATIO[shape]
        drawn = DRAWN_HALF_EXTENT[silhouette]
        # the width whose silhouette, at the depth of the box centre (CAMERA_HEIGHT_M - height / 2), is drawn at
        # spec.radius: w / 2 = drawn * radius * depth / FOCAL_PX with depth = CAMERA_HEIGHT_M - ratio * w / 2
        width = 2 * drawn * spec.radius * CAMERA_HEIGHT_M / (FOCAL_PX + drawn * spec.radius * ratio)
        width = float(np.clip(width, *WIDTH_M[spec.size]))
        height = width * ratio
        depth = CAMERA_HEIGHT_M - height / 2
        centre = back_project(camera, [(spec.cx, spec.cy)], [depth])[0] @ camera_to_lidar[:3, :3].T \
            + camera_to_lidar[:3, 3]
        yaw = rng.integers(4) * np.pi / 2  # upright in the image: its box projects as tight as a 2-D detector's
        primitives.append(PrimitiveSpec(shape, spec.size, width, height, float(centre[0]), float(centre[1]),
                                        float(yaw)))
        radius = FOCAL_PX * width / 2 / drawn / depth
        silhouettes.append(ShapeSpec(silhouette, spec.size, spec.colour, spec.cx, spec.cy, radius))
    return primitives, silhouettes


class SharedScenes:
    """A SceneSource (tools/sim_sensors.py) whose camera and LiDAR views of index i show the same world."""

    def camera_scene(self, index: int, image_size: int) -> CameraScene:
        _, silhouettes = sample_world(index)
        scale = image_size / LAYOUT_SIZE
        drawn = [ShapeSpec(s.shape, s.size, s.colour, s.cx * scale, s.cy * scale, s.radius * scale)
                 for s in silhouettes]
        image, boxes = render(drawn, sample_rng("eval", "shared_scene/camera", index), image_size)
        truths = [{"size": s.size, "colour": s.colour, "shape": s.shape, "phrase": object_phrase(s.shape, s.size,
                                                                                                   s.colour)}
                  for s in silhouettes]
        return CameraScene(image, boxes, truths, camera_matrix(image_size))

    def lidar_scene(self, index: int, num_points: int) -> LidarScene:
        primitives, silhouettes = sample_world(index)
        points = render_scene(primitives, num_points, sample_rng("eval", "shared_scene/lidar", index))
        truths = [{**attributes, "colour": silhouette.colour, "phrase": phrase}
                  for (phrase, attributes), silhouette in
                  zip((region_caption(primitives, k) for k in range(len(primitives))), silhouettes)]
        return LidarScene(points, np.array([p.center for p in primitives]).reshape(-1, 3),
                          np.array([p.box_size for p in primitives]).reshape(-1, 3),
                          np.array([p.yaw for p in primitives]), truths)
