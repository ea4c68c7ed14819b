"""Point-region boxes reach the model as the released RegionBLIP's 8 corners, whichever layer builds them, and a
checkpoint or bundle trained under the legacy corner order is refused with what to do."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

from contract.boxes import CornerConventionError
from runtime.bundle import BundleError, load_bundle
from runtime.cli import boxes_3d
from tests.tiny_checkpoint import tiny_config, write_tiny_checkpoint
from training.data.boxes import box_corners as data_box_corners
from training.modeling_regionblip import RegionBLIP

CENTER, SIZE, YAW = (1.0, -0.5, 0.4), (0.8, 0.5, 0.3), 0.6


def soft_prompt(model, points, corners) -> torch.Tensor:
    corners = torch.as_tensor(np.asarray(corners, np.float32).reshape(-1, 24))
    with torch.no_grad():
        model.use_modality("pointcloud_region")
        features = model.encode_frames("pointcloud_region", points=points)
        _, prompt = model.soft_prompt("pointcloud_region", features, corners, torch.zeros(len(corners), dtype=torch.long),
                                      points)
    return prompt


@pytest.fixture(scope="module")
def model_and_scene():
    torch.manual_seed(0)
    model = RegionBLIP(tiny_config()).eval()
    points = torch.rand(1, model.config.scene_num_points, 3) * 2 - 1
    return model, points


@pytest.mark.ros
def test_training_data_runtime_and_ros_corners_give_the_same_soft_prompt(model_and_scene):
    from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
    from regionblip_msgs.msg import Region3D
    from regionblip_ros.conversions import region3d_to_corners

    model, points = model_and_scene
    from_data = data_box_corners(CENTER, SIZE, YAW)[None]
    from_cli = boxes_3d([[*CENTER, *SIZE, YAW]])
    region = Region3D(center=Pose(position=Point(x=CENTER[0], y=CENTER[1], z=CENTER[2]),
                                  orientation=Quaternion(z=math.sin(YAW / 2), w=math.cos(YAW / 2))),
                      size=Vector3(x=SIZE[0], y=SIZE[1], z=SIZE[2]))
    from_ros, problems = region3d_to_corners([region])
    assert problems == {}
    reference = soft_prompt(model, points, from_data)
    torch.testing.assert_close(soft_prompt(model, points, from_cli), reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(soft_prompt(model, points, from_ros), reference, atol=1e-6, rtol=0)
    # The legacy order (itertools.product signs, no y/z swap) is a different input: the check above can fail.
    rotation = np.array([[math.cos(YAW), -math.sin(YAW), 0], [math.sin(YAW), math.cos(YAW), 0], [0, 0, 1]])
    legacy = np.array([np.array(CENTER) + rotation @ (np.array(signs) * SIZE / 2)
                       for signs in itertools.product((-1, 1), repeat=3)])
    assert (soft_prompt(model, points, legacy[None]) - reference).abs().max() > 1e-3


def test_a_checkpoint_without_a_recorded_convention_is_refused(tmp_path):
    directory = write_tiny_checkpoint(tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    assert config["box_corner_convention"] == "regionblip"
    del config["box_corner_convention"]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CornerConventionError, match=r"does not record its box corner convention.*retrain"):
        RegionBLIP.from_pretrained(directory)


def test_export_refuses_a_legacy_checkpoint_in_one_line(tmp_path, capsys):
    from export.onnx import main

    directory = write_tiny_checkpoint(tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "box_corner_convention": "xyz-product"}))
    assert main(["--ckpt", str(directory), "--out", str(tmp_path / "bundle")]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "reads 3-D box corners in the 'xyz-product' convention" in error[0]
    assert not (tmp_path / "bundle").exists()


def test_a_bundle_of_a_legacy_checkpoint_is_refused(tiny_bundle, tmp_path):
    import shutil

    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["model"]["box_corner_convention"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"the bundle .* does not record its box corner convention.*re-export"):
        load_bundle(bundle)
