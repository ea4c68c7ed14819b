"""A BLIP-2 checkpoint loaded with RegionBLIP.from_blip2 runs, on the image modality, exactly as transformers' BLIP-2."""

import pytest
import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration

from training.config import RegionBLIPConfig
from training.modeling_regionblip import RegionBLIP

NUM_QUERY_TOKENS = 8
IMAGE_TOKEN = 100
EOS = 71  # a token this random tiny model does produce, so decoding stops early on some rows


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    tiny = RegionBLIPConfig.preset("tiny")
    config = Blip2Config(vision_config=dict(tiny.vision, initializer_range=0.02), qformer_config=tiny.qformer,
                         text_config=dict(tiny.text, model_type="opt"), num_query_tokens=NUM_QUERY_TOKENS,
                         image_token_index=IMAGE_TOKEN)
    reference = Blip2ForConditionalGeneration(config).eval()
    directory = tmp_path_factory.mktemp("blip2")
    reference.save_pretrained(directory, max_shard_size="100KB")  # sharded safetensors, as the hub checkpoint
    assert (directory / "model.safetensors.index.json").exists()
    point_fields = {k: getattr(tiny, k) for k in ("point_num_group", "point_group_size", "point_pointnet_width",
                                                  "point_trans_dim", "point_depth", "point_heads")}
    model = RegionBLIP.from_blip2(directory, newline_token_id=EOS, **point_fields)
    return reference, model


def images(n=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_logits_match_transformers_blip2(pair):
    reference, model = pair
    caption = torch.randint(3, 90, (2, 7), generator=torch.Generator().manual_seed(2))
    attention_mask = torch.ones_like(caption)
    attention_mask[1, 5:] = 0
    image_tokens = torch.full((2, NUM_QUERY_TOKENS), IMAGE_TOKEN)
    with torch.no_grad():
        expected = reference(pixel_values=images(), input_ids=torch.cat([image_tokens, caption], 1),
                             attention_mask=torch.cat([torch.ones_like(image_tokens), attention_mask], 1)).logits
        ours = model("image", caption, attention_mask, pixel_values=images()).logits
    assert ours.shape == expected.shape == (2, NUM_QUERY_TOKENS + 7, 128)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generated_tokens_match_transformers_blip2(pair, num_beams):
    reference, model = pair
    settings = dict(num_beams=num_beams, max_new_tokens=12, min_new_tokens=3, eos_token_id=EOS)
    with torch.no_grad():
        expected = reference.generate(pixel_values=images(3), do_sample=False, pad_token_id=1, **settings)
    ours = model.generate("image", pixel_values=images(3), **settings)
    # transformers returns the prompt (image tokens + BOS) ahead of the new tokens
    assert expected.shape[1] > NUM_QUERY_TOKENS + 1
    assert torch.equal(ours.token_ids, expected[:, NUM_QUERY_TOKENS + 1:])
    assert ours.scores.shape == (3,) and bool((ours.scores < 0).all())


def test_scores_are_the_mean_log_prob_of_the_generated_tokens_up_to_eos(pair):
    reference, model = pair
    with torch.no_grad():
        expected = reference.generate(pixel_values=images(3), do_sample=False, pad_token_id=1, max_new_tokens=12,
                                      eos_token_id=EOS, output_logits=True, return_dict_in_generate=True)
    ours = model.generate("image", pixel_values=images(3), num_beams=1, max_new_tokens=12, min_new_tokens=0,
                          eos_token_id=EOS)
    tokens = expected.sequences[:, NUM_QUERY_TOKENS + 1:]
    log_probs = torch.stack(expected.logits, 1).log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    for row in range(3):
        eos = (tokens[row] == EOS).nonzero()
        length = int(eos[0]) + 1 if len(eos) else tokens.shape[1]
        torch.testing.assert_close(ours.scores[row], log_probs[row, :length].mean(), rtol=0, atol=1e-5)
