"""export/qformer.py: region Q-Former graphs project each frame's features to keys and values once per frame."""
import onnx
import pytest
import torch

from export.graphs import build_graph
from training.modeling_regionblip import RegionBLIP

MODALITIES = ["image", "image_region", "pointcloud", "pointcloud_region"]


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return RegionBLIP.from_pretrained(tiny_checkpoint)


@pytest.mark.parametrize("modality, box_dims", [("image_region", 4), ("pointcloud_region", 24)])
def test_the_framewise_prompt_equals_the_models_own(model, modality, box_dims):
    # The tiny checkpoint has both PaFE options on: the box mark on image features and the point-region crop.
    assert model.config.region_feature_mask and model.config.point_region_crop
    generator = torch.Generator().manual_seed(0)
    tokens = model.config.patch_grid ** 2 + 1 if modality == "image_region" else model.config.point_num_group + 1
    features = torch.randn(3, tokens, model.config.qformer_config().encoder_hidden_size, generator=generator)
    boxes = torch.rand(6, box_dims, generator=generator)
    if box_dims == 4:
        boxes = torch.cat([boxes[:, :2] * 0.5, 0.5 + boxes[:, 2:] * 0.5], 1)
    frame_index = torch.tensor([2, 0, 1, 1, 2, 0])
    points = torch.randn(3, 150, 3, generator=generator) if modality == "pointcloud_region" else None
    graph = build_graph(model, f"qformer_{modality}", MODALITIES)
    with torch.no_grad():
        ours = graph.module(features, boxes, frame_index, points)
        expected = model.soft_prompt(modality, features, boxes, frame_index, points)[1]
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_the_exported_keys_and_values_multiply_the_frames_not_the_regions(tiny_bundle, model):
    graph = onnx.load(str(tiny_bundle / "qformer_image_region.onnx"), load_external_data=False).graph
    cross_layers = sum(layer.has_cross_attention for layer in model.qformer.encoder.layer)
    on_frames = [node for node in graph.node if node.op_type == "MatMul" and node.input[0] == "features"]
    assert len(on_frames) == 2 * cross_layers  # a key and a value projection per cross-attention layer
