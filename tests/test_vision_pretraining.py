"""The vision stage's targets and loss: each patch names the object whose box centre it holds."""

import torch

from training.data import SyntheticImageDataset
from training.data.vocabulary import COLOURS, IMAGE_SHAPES, SIZES
from training.vision_pretraining import IGNORE, NO_OBJECT, PatchAttributeHead, patch_attribute_loss, patch_targets
from transformers import Blip2VisionConfig, Blip2VisionModel


def obj(shape, colour, size, box):
    return {"shape": shape, "colour": colour, "size": size, "box_xyxy_px": box}


def test_each_object_is_named_at_the_patch_that_holds_its_box_centre():
    # a 96 px image on a 4 x 4 patch grid (24 px patches); centres (12, 12) -> patch 0, (60, 84) -> row 3, col 2
    objects = [[obj("circle", "red", "small", [4, 4, 20, 20]), obj("cross", "blue", "large", [40, 64, 80, 104])]]
    targets = patch_targets(objects, [96], grid=4)
    assert targets.shape == (1, 3, 16)
    assert targets[0, :, 0].tolist() == [IMAGE_SHAPES.index("circle") + 1, list(COLOURS).index("red"),
                                         SIZES.index("small")]
    assert targets[0, :, 14].tolist() == [IMAGE_SHAPES.index("cross") + 1, list(COLOURS).index("blue"),
                                          SIZES.index("large")]
    empty = [p for p in range(16) if p not in (0, 14)]
    assert (targets[0, 0, empty] == NO_OBJECT).all() and (targets[0, 1:, empty] == IGNORE).all()
    # the same layout drawn at 48 px lands on the same patches
    half = [[{**o, "box_xyxy_px": [v / 2 for v in o["box_xyxy_px"]]} for o in objects[0]]]
    assert torch.equal(patch_targets(half, [48], grid=4), targets)


def test_a_patch_holding_two_centres_teaches_nothing():
    objects = [[obj("circle", "red", "small", [0, 0, 10, 10]), obj("square", "green", "small", [12, 12, 20, 20])]]
    targets = patch_targets(objects, [96], grid=4)
    assert (targets[0, :, 0] == IGNORE).all()


def test_every_synthetic_object_gets_its_own_patch_on_the_default_grid():
    dataset = SyntheticImageDataset("image", "train", 50, image_size=96)
    samples = [dataset[i] for i in range(50)]
    targets = patch_targets([s.attributes["objects"] for s in samples], [96] * 50, grid=8)
    named = (targets[:, 0] > NO_OBJECT).sum(dim=1).tolist()
    assert named == [len(s.attributes["objects"]) for s in samples]
    assert (targets != IGNORE).any(dim=1).all()  # no patch had two centres


def test_the_loss_falls_when_the_head_learns_and_handles_an_all_empty_batch():
    torch.manual_seed(0)
    vit = Blip2VisionModel(Blip2VisionConfig(image_size=48, patch_size=12, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, initializer_range=0.02))
    head = PatchAttributeHead(32)
    pixels = torch.randn(2, 3, 48, 48)
    targets = patch_targets([[obj("diamond", "yellow", "large", [0, 0, 24, 24])], []], [48, 48], grid=4)
    optimizer = torch.optim.Adam([*vit.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = patch_attribute_loss(vit, head, pixels, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], losses
    empty = patch_targets([[]], [48], grid=4)
    assert torch.isfinite(patch_attribute_loss(vit, head, pixels[:1], empty))
