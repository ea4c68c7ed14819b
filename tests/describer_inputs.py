"""One small input per modality, and the Describer call that describes it: what the backend comparisons share."""
import numpy as np

from contract.boxes import box_corners, yaw_to_matrix

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
BOXES = [[0, 0, 30, 30], [10, 5, 60, 45], [40, 20, 64, 48]]
SCENE = RNG.normal(size=(400, 3)).astype(np.float32)
CORNERS = box_corners(np.array([[0, 0, 0], [1, 0, 0.5]]), np.array([[1, 1, 1], [0.5, 2, 1]]),
                      yaw_to_matrix(np.array([0.0, 0.7])))
CALLS = {
    "image_region": lambda d: d.describe_image_regions(IMAGE, BOXES),
    "pointcloud_region": lambda d: d.describe_point_regions(SCENE, CORNERS),
    "pointcloud": lambda d: d.describe_point_objects([SCENE, SCENE[:150] * 3]),
    "image": lambda d: d.describe_images([IMAGE, IMAGE[::-1].copy()]),
}
