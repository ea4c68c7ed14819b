"""export/vision_resize.py: a BLIP-2 ViT resized to another image size computes what transformers computes there
with interpolate_pos_encoding=True, in PyTorch and in ONNX Runtime."""
import warnings

import numpy as np
import onnxruntime
import pytest
import torch
from transformers import Blip2VisionConfig, Blip2VisionModel

from export.onnx import OPSET
from export.vision_resize import resize_vision_model, set_image_size
from training.config import RegionBLIPConfig
from training.modeling_regionblip import RegionBLIP

TRAINED, PATCH = 224, 14  # BLIP-2's ViT-g/14 grid (16 x 16), at a tiny width


@pytest.fixture(scope="module")
def vision_model():
    torch.manual_seed(0)
    config = Blip2VisionConfig(image_size=TRAINED, patch_size=PATCH, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, initializer_range=0.02)
    model = Blip2VisionModel(config).eval()
    with torch.no_grad():  # transformers' init leaves the table near zero, which would hide a wrong resize
        model.embeddings.position_embedding.normal_()
    return model


def images(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(size))


@pytest.mark.parametrize("size", [364, 168])  # the release's evaluation size, and a smaller one
@torch.no_grad()
def test_a_plain_forward_at_the_new_size_equals_transformers_interpolate_pos_encoding(vision_model, size):
    resized = resize_vision_model(vision_model, size)
    pixels = images(size)
    expected = vision_model(pixel_values=pixels, interpolate_pos_encoding=True)
    got = resized(pixel_values=pixels)
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-5, rtol=0)


def test_the_resized_model_describes_its_new_size_and_the_caller_keeps_the_old(vision_model):
    before = vision_model.embeddings.position_embedding.detach().clone()
    resized = resize_vision_model(vision_model, 364)
    embeddings, grid = resized.embeddings, 364 // PATCH
    assert (resized.config.image_size, embeddings.image_size) == (364, 364)
    assert (embeddings.num_patches, embeddings.num_positions) == (grid ** 2, grid ** 2 + 1)
    assert embeddings.position_embedding.shape == (1, grid ** 2 + 1, 32)
    assert vision_model.config.image_size == vision_model.embeddings.image_size == TRAINED
    assert torch.equal(vision_model.embeddings.position_embedding, before)
    assert torch.equal(embeddings.position_embedding[:, 0], before[:, 0])  # the class token's is not interpolated


@torch.no_grad()
def test_the_trained_size_gives_identical_outputs(vision_model):
    pixels = images(TRAINED)
    same = resize_vision_model(vision_model, TRAINED)
    assert torch.equal(same(pixel_values=pixels).last_hidden_state,
                       vision_model(pixel_values=pixels).last_hidden_state)


@pytest.mark.parametrize("size, message", [
    (370, "image size 370 is not a multiple of the vision model's patch size 14: choose one that is, such as 364 "
          "or 378"),
    (7, "image size 7 is smaller than the vision model's patch size 14"),
    (0, "image size 0 is smaller than the vision model's patch size 14"),
    (364.0, "image size must be a whole number of pixels, got 364.0"),
])
def test_a_size_the_patches_do_not_tile_is_rejected(vision_model, size, message):
    with pytest.raises(ValueError) as raised:
        resize_vision_model(vision_model, size)
    assert str(raised.value).startswith(message)


class LastHiddenState(torch.nn.Module):
    def __init__(self, vision_model):
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixel_values):
        return self.vision_model(pixel_values=pixel_values).last_hidden_state


@torch.no_grad()
def test_the_resized_model_exported_to_onnx_equals_transformers_interpolate_pos_encoding(vision_model, tmp_path):
    path = tmp_path / "vision.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values; parity below is the real check
        torch.onnx.export(LastHiddenState(resize_vision_model(vision_model, 364)).eval(), (images(364),), str(path),
                          input_names=["pixel_values"], output_names=["image_features"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_features": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    pixels = images(364, batch=3)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixel_values": pixels.numpy()})[0]
    expected = vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)


@torch.no_grad()
def test_set_image_size_moves_a_regionblip_and_its_config_to_the_new_size():
    torch.manual_seed(0)
    model = RegionBLIP(RegionBLIPConfig.preset("tiny")).eval()  # 32 px, patch 8
    reference = resize_vision_model(model.vision_model, 32)  # an untouched copy, to compare against
    set_image_size(model, 48)
    assert (model.config.image_size, model.config.patch_grid) == (48, 6)
    pixels = images(48)
    features = model.encode_frames("image", pixel_values=pixels)  # the input check follows the config
    expected = reference(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=0)
