"""RegionBLIP on the tiny preset: modality isolation, PaFE, trainable sets, per-frame batching, input checks."""

import pytest
import torch

from contract.modalities import MODALITIES
from training.config import RegionBLIPConfig
from training.modeling_regionblip import RegionBLIP

GEN = dict(num_beams=2, max_new_tokens=6, min_new_tokens=2)


def make_model(seed=0):
    torch.manual_seed(seed)
    return RegionBLIP(RegionBLIPConfig.preset("tiny")).eval()


def rand(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


IMAGE = rand(1, 3, 32, 32)
BOXES = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.4, 0.2, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]])
SCENE = rand(1, 64, 3, seed=2)
BOXES_3D = rand(3, 8, 3, seed=3)
INPUTS = {
    "image": dict(pixel_values=IMAGE.expand(3, -1, -1, -1)),
    "image_region": dict(pixel_values=IMAGE, boxes=BOXES),
    "pointcloud": dict(points=SCENE.expand(3, -1, -1)),
    "pointcloud_region": dict(points=SCENE, boxes=BOXES_3D),
}
CAPTIONS = torch.randint(3, 100, (3, 6), generator=torch.Generator().manual_seed(4))
MASK = torch.tensor([[1] * 6, [1] * 6, [1] * 4 + [0] * 2])


def loss(model, modality):
    return model(modality, CAPTIONS, MASK, **INPUTS[modality]).loss


def test_every_modality_gives_a_loss_and_generates_one_caption_per_input():
    model = make_model()
    for modality in MODALITIES:
        out = model(modality, CAPTIONS, MASK, **INPUTS[modality])
        assert out.logits.shape == (3, 8 + 6, 128)
        assert (out.box_loss is not None) == modality.endswith("region")
        assert torch.isfinite(out.loss)
        generated = model.generate(modality, **INPUTS[modality], **GEN)
        assert generated.token_ids.shape[0] == 3 and 2 <= generated.token_ids.shape[1] <= 6
        assert generated.scores.shape == (3,) and bool((generated.scores <= 0).all())


def test_lm_loss_covers_the_caption_tokens_only_and_box_loss_is_l1_on_the_mean_query():
    model = make_model()
    with torch.no_grad():
        out = model("image_region", CAPTIONS, MASK, **INPUTS["image_region"])
        query_output, _ = model.soft_prompt("image_region", model.encode_frames("image_region", IMAGE), BOXES)
    predictions = out.logits[:, 8 - 1:-1]  # the last soft token predicts the first caption token
    expected = torch.nn.functional.cross_entropy(predictions.flatten(0, 1),
                                                 CAPTIONS.masked_fill(MASK == 0, -100).flatten())
    torch.testing.assert_close(out.lm_loss, expected)
    box_loss = (model.box_regression["image_region"](query_output.mean(1)) - BOXES).abs().mean()
    torch.testing.assert_close(out.box_loss, box_loss)
    torch.testing.assert_close(out.loss, out.lm_loss + 1.0 * out.box_loss)


def test_training_the_image_region_adapter_leaves_the_image_modality_bit_identical():
    model = make_model()
    with torch.no_grad():
        before = {m: model(m, CAPTIONS, MASK, **INPUTS[m]).logits for m in ("image", "image_region")}
        image_tokens = model.generate("image", **INPUTS["image"], **GEN).token_ids
    optimizer = torch.optim.AdamW(model.freeze_for("regionblip").values(), lr=1e-2, weight_decay=0.05)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        loss(model, "image_region").backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = {m: model(m, CAPTIONS, MASK, **INPUTS[m]).logits for m in ("image", "image_region")}
    assert torch.equal(after["image"], before["image"])
    assert torch.equal(model.generate("image", **INPUTS["image"], **GEN).token_ids, image_tokens)
    assert not torch.allclose(after["image_region"], before["image_region"])


def test_different_boxes_on_one_image_give_different_soft_prompts():
    model = make_model()
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.1, 0.1, 0.5, 0.6], [0.3, 0.2, 0.9, 0.8]])
    with torch.no_grad():
        model.use_modality("image_region")
        features = model.encode_frames("image_region", pixel_values=IMAGE)
        _, prompt = model.soft_prompt("image_region", features, boxes)
    assert prompt.shape == (3, 8, 32)
    assert torch.equal(prompt[0], prompt[1])
    assert (prompt[0] - prompt[2]).abs().max() > 1e-4


@pytest.mark.parametrize("stage,modalities", [("blip2", ["image"]),
                                              ("regionblip", ["image_region", "pointcloud", "pointcloud_region"])])
def test_gradients_reach_exactly_the_stage_trainable_set(stage, modalities):
    model = make_model()
    trainable = model.freeze_for(stage)
    sum(loss(model, m) for m in modalities).backward()
    reached = {n for n, p in model.named_parameters() if p.grad is not None}
    assert reached == set(trainable)
    assert not any(n.startswith(("vision_model.", "point_encoder.")) for n in trainable)


def test_trainable_sets_hold_the_released_parts():
    model = make_model()
    assert all(p.requires_grad for p in model.parameters())  # until freeze_for picks a stage
    blip2, region = model.trainable_parameters("blip2"), model.trainable_parameters("regionblip")
    assert "query_tokens.image" in blip2 and "query_tokens.image_region" not in blip2
    assert not any(".lora_" in n for n in blip2)
    assert {"query_tokens.image_region", "query_tokens.pointcloud", "query_tokens.pointcloud_region"} <= set(region)
    assert not set(blip2) & set(region)
    assert not any(n.startswith(("qformer.", "language_model.")) and ".lora_" not in n for n in region)
    lora_in_qformer = sum(p.numel() for n, p in region.items() if n.startswith("qformer.") and ".lora_" in n)
    # tiny: 2 self-attn + 1 cross-attn layer, query/value 32 -> 32, r = 8
    assert lora_in_qformer == 2 * 3 * 8 * (32 + 32)


def test_regions_of_one_frame_share_one_image_encoding_and_match_single_region_runs():
    model = make_model()
    calls = []
    model.vision_model.register_forward_hook(lambda *args: calls.append(1))
    batched = model.generate("image_region", pixel_values=IMAGE, boxes=BOXES, **GEN)
    assert len(calls) == 1
    for i in range(3):
        single = model.generate("image_region", pixel_values=IMAGE, boxes=BOXES[i:i + 1], **GEN)
        width = single.token_ids.shape[1]
        assert torch.equal(single.token_ids[0], batched.token_ids[i, :width])
        torch.testing.assert_close(single.scores[0], batched.scores[i], rtol=0, atol=1e-5)


def test_regions_of_several_frames_follow_frame_index():
    model = make_model()
    images = torch.cat([IMAGE, rand(1, 3, 32, 32, seed=9)])
    frame_index = torch.tensor([1, 0])
    with torch.no_grad():
        both = model("image_region", CAPTIONS[:2], MASK[:2], pixel_values=images, boxes=BOXES[:2],
                     frame_index=frame_index).logits
        second = model("image_region", CAPTIONS[:1], MASK[:1], pixel_values=images[1:], boxes=BOXES[:1]).logits
    torch.testing.assert_close(both[:1], second, rtol=0, atol=1e-5)


@pytest.mark.parametrize("modality,inputs,message", [
    ("video", dict(pixel_values=IMAGE), "unknown modality"),
    ("image", dict(pixel_values=rand(1, 3, 64, 64)), r"\(B, 3, 32, 32\)"),
    ("image_region", dict(pixel_values=IMAGE, boxes=torch.tensor([[0.1, 0.1, 1.5, 0.5]])), r"\[0, 1\]"),
    ("image_region", dict(pixel_values=IMAGE, boxes=torch.tensor([[0.5, 0.1, 0.2, 0.5]])), "x2 > x1"),
    ("image_region", dict(pixel_values=IMAGE), "needs boxes"),
    ("image", dict(pixel_values=IMAGE, boxes=BOXES[:1]), "no regions"),
    ("pointcloud", dict(points=rand(1, 64, 4)), r"\(B, N, 3\)"),
    ("pointcloud", dict(points=rand(1, 8, 3)), "at least 16"),
    ("pointcloud_region", dict(points=SCENE, boxes=rand(2, 6, 3)), r"\(R, 8, 3\)"),
    ("image_region", dict(pixel_values=torch.cat([IMAGE, IMAGE]), boxes=BOXES), "frame_index"),
])
def test_bad_inputs_raise_value_errors_naming_the_problem(modality, inputs, message):
    model = make_model()
    with pytest.raises(ValueError, match=message):
        model.generate(modality, **inputs, **GEN)


def test_a_caption_count_that_does_not_match_the_regions_is_rejected():
    with pytest.raises(ValueError, match="3 captions for 2 images/regions"):
        make_model()("image_region", CAPTIONS, MASK, pixel_values=IMAGE, boxes=BOXES[:2])


def test_unknown_stage_and_preset_are_rejected():
    with pytest.raises(ValueError, match="unknown stage"):
        make_model().trainable_parameters("everything")
    with pytest.raises(ValueError, match="unknown preset"):
        RegionBLIPConfig.preset("huge")


def test_point_adapter_init_std_sets_the_adapter_weights_and_defaults_to_pytorchs_init():
    torch.manual_seed(0)
    scaled = RegionBLIP(RegionBLIPConfig.from_dict({**RegionBLIPConfig.preset("tiny").to_dict(),
                                                    "point_adapter_init_std": 0.25}))
    assert abs(scaled.point_adapter.weight.std().item() - 0.25) < 0.03
    default = make_model().point_adapter.weight
    bound = 1 / default.shape[1] ** 0.5  # nn.Linear's kaiming-uniform bound
    assert default.abs().max().item() <= bound and default.std().item() < 0.25 / 2


def test_patch_box_overlap_is_the_covered_fraction_of_each_patch_cell_after_a_zero_for_cls():
    from training.pafe import patch_box_overlap
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(patch_box_overlap(boxes, grid=2), torch.tensor([
        [0.0, 1.0, 0.0, 0.0, 0.0],    # exactly the top-left cell
        [0.0, 0.5, 0.5, 0.0, 0.0],    # half of each top cell
        [0.0, 1.0, 1.0, 1.0, 1.0]]))  # the whole image


def masked_model():
    torch.manual_seed(0)
    config = RegionBLIPConfig.preset("tiny")
    config.region_feature_mask = True
    return RegionBLIP(config).eval()


def test_the_released_layout_has_no_feature_mark_and_the_mark_starts_at_zero():
    assert "region_feature_embedding" not in dict(make_model().named_parameters())
    plain, marked = make_model(), masked_model()  # same seed: the mark draws no random numbers
    with torch.no_grad():
        features = plain.encode_frames("image_region", IMAGE)
        plain.use_modality("image_region"), marked.use_modality("image_region")
        torch.testing.assert_close(marked.soft_prompt("image_region", features, BOXES)[1],
                                   plain.soft_prompt("image_region", features, BOXES)[1])


@torch.no_grad()
def test_the_feature_mark_moves_image_region_prompts_only_and_trains_in_stage_two():
    model = masked_model()
    before = {m: model.generate(m, **INPUTS[m], **GEN).scores for m in MODALITIES}
    prompt = model.soft_prompt("image_region", model.encode_frames("image_region", IMAGE), BOXES)[1]
    model.region_feature_embedding.copy_(torch.randn(model.region_feature_embedding.shape))
    model.use_modality("image_region")
    moved = model.soft_prompt("image_region", model.encode_frames("image_region", IMAGE), BOXES)[1]
    assert (moved - prompt).abs().amax() > 1e-3
    after = {m: model.generate(m, **INPUTS[m], **GEN).scores for m in MODALITIES}
    for modality in ("image", "pointcloud", "pointcloud_region"):
        torch.testing.assert_close(after[modality], before[modality])
    assert "region_feature_embedding" in model.trainable_parameters("regionblip")
    assert "region_feature_embedding" not in model.trainable_parameters("blip2")


def test_a_point_region_crop_takes_the_points_inside_the_box_first_centred_and_scaled_to_it():
    from training.data.boxes import box_corners
    from training.pafe import crop_box_points
    inside = torch.tensor([[1.0, 2.0, 0.5], [1.5, 2.0, 0.9], [0.6, 2.2, 0.1]])   # in the box below
    near, far = torch.tensor([[2.2, 2.0, 0.5]]), torch.tensor([[-3.0, -3.0, 0.0], [5.0, 1.0, 0.0]])
    scene = torch.cat([far, inside[:1], near, inside[1:]])[None]  # (1, 6, 3), shuffled
    corners = torch.from_numpy(box_corners([1.0, 2.0, 0.5], [2.0, 1.0, 1.0], yaw=0.0)).reshape(1, 24)
    crop = crop_box_points(scene, corners, count=4)[0]
    # the three inside points (any order), then the nearest outside one; centred on (1, 2, 0.5), divided by 1
    assert sorted(crop[:3].tolist()) == sorted((inside - torch.tensor([1.0, 2.0, 0.5])).tolist())
    torch.testing.assert_close(crop[3], torch.tensor([1.2, 0.0, 0.0]))


def test_a_rotated_box_crops_by_its_own_axes():
    from training.data.boxes import box_corners
    from training.pafe import crop_box_points
    # a long thin box along the diagonal: a point on the diagonal is inside, one across it (as near) is not
    corners = torch.from_numpy(box_corners([0.0, 0.0, 0.5], [4.0, 0.2, 1.0], yaw=float(torch.pi / 4))).reshape(1, 24)
    on_axis, across = torch.tensor([[1.0, 1.0, 0.5]]), torch.tensor([[1.0, -1.0, 0.5]])
    crop = crop_box_points(torch.cat([across, on_axis])[None], corners, count=1)[0]
    torch.testing.assert_close(crop, on_axis / 2.0 - torch.tensor([[0.0, 0.0, 0.25]]))


def test_a_crop_reads_the_y_and_z_extents_back_from_the_releases_corners():
    from training.data.boxes import box_corners
    from training.pafe import crop_box_points
    # 2 m long, 1 m wide, 0.4 m tall: the release's corners carry the height along y and the width along z
    corners = torch.from_numpy(box_corners([0.0, 0.0, 0.0], [2.0, 1.0, 0.4], yaw=0.0)).reshape(1, 24)
    wide_inside, high_outside = torch.tensor([[0.0, 0.45, 0.0]]), torch.tensor([[0.0, 0.0, 0.3]])
    crop = crop_box_points(torch.cat([high_outside, wide_inside])[None], corners, count=1)[0]
    torch.testing.assert_close(crop, wide_inside / 1.0)  # divided by half the largest extent, 1 m


def test_point_region_prompts_see_their_own_crop_and_the_crop_size_is_checked():
    torch.manual_seed(0)
    config = RegionBLIPConfig.preset("tiny")
    config.point_region_crop = 32
    model = RegionBLIP(config).eval()
    box = BOXES_3D[:1].reshape(1, 24)
    with torch.no_grad():
        model.use_modality("pointcloud_region")
        features = model.encode_frames("pointcloud_region", points=SCENE)
        prompt = model.soft_prompt("pointcloud_region", features, box, points=SCENE)[1]
        # other points, same scene features: only the crop path can tell them apart
        other = model.soft_prompt("pointcloud_region", features, box, points=SCENE + 0.3)[1]
    assert (other - prompt).abs().amax() > 1e-4
    with pytest.raises(ValueError, match="need the scene points"):
        model.soft_prompt("pointcloud_region", features, box)
    with pytest.raises(ValueError, match="point_region_crop is 8"):
        RegionBLIPConfig.from_dict({**config.to_dict(), "point_region_crop": 8})
