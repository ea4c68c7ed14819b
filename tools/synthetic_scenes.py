"""The demo's separate scenes (python -m tools.demo --scenes separate): the synthetic generators' held-out camera
and LiDAR scenes, each sensor its own world (tools/shared_scene.py has the one world both sensors see)."""
import numpy as np

from tools.sim_sensors import CameraScene, LidarScene
from training.data.splits import sample_rng
from training.data.synthetic_images import SyntheticImageDataset
from training.data.synthetic_points import region_caption, render_scene, sample_scene
from training.data.vocabulary import object_phrase


class SyntheticScenes:
    """Scenes of the synthetic generators' eval split, which training never sees; every object is a region."""

    def camera_scene(self, index: int, image_size: int) -> CameraScene:
        sample = SyntheticImageDataset("image", "eval", length=index + 1, image_size=image_size)[index]
        objects = sample.attributes["objects"]
        truths = [{"size": o["size"], "colour": o["colour"], "shape": o["shape"],
                   "phrase": object_phrase(o["shape"], o["size"], o["colour"])} for o in objects]
        return CameraScene(sample.image, np.array([o["box_xyxy_px"] for o in objects], np.float32), truths)

    def lidar_scene(self, index: int, num_points: int) -> LidarScene:
        # The points of SyntheticPointDataset("pointcloud_region", "eval")[index], with every object boxed: the
        # same draws in the same order, the dataset's choice of one region included.
        rng = sample_rng("eval", "pointcloud_region", index)
        scene = sample_scene(rng)
        rng.integers(len(scene))
        points = render_scene(scene, num_points, rng)
        truths = [{**attributes, "phrase": phrase}
                  for phrase, attributes in (region_caption(scene, k) for k in range(len(scene)))]
        return LidarScene(points, np.array([o.center for o in scene]), np.array([o.box_size for o in scene]),
                          np.array([o.yaw for o in scene]), truths)
