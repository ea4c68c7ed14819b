"""Per-region text prompts (runtime/prompts.py): a frame's regions with different prompts, or none, decode in one
batch exactly as each would alone, on every backend and decoder; the bundle refuses what it cannot do, saying so."""
import dataclasses

import numpy as np
import pytest

from contract.generation import MAX_PROMPT_TOKENS
from runtime.bundle import load_bundle
from runtime.graph_engine import GraphEngine
from runtime.onnx_runner import OnnxRunner
from tests.describer_inputs import BOXES, CORNERS, IMAGE, SCENE
from tests.device_engines import KINDS, device_and_host

QUESTION = "Question: what colour is it? Answer:"  # 32 tokens in the default tokenizer: the longest a prompt may be
# Four regions: no prompt, the longest, and two others of different lengths (10 and 1 tokens)
PROMPTS = ["", QUESTION, "what shape?", "a"]
REGIONS = BOXES + [[5, 10, 50, 40]]
TOO_LONG = "red " * 40
TOP_K = 16  # export/llm.py's TOP_K


BACKENDS = ["onnx_describer", "torch_describer", "static_describer"]
DECODING = {"greedy": dict(num_beams=1, min_new_tokens=0), "3 beams": dict(num_beams=3, min_new_tokens=2)}
# Each modality's call over the prompts of its rows, and how many rows it has
CALLS = {
    "image_region": (lambda d, p: d.describe_image_regions(IMAGE, REGIONS, prompts=p), len(REGIONS)),
    "pointcloud_region": (lambda d, p: d.describe_point_regions(SCENE, CORNERS, prompts=p), len(CORNERS)),
    "pointcloud": (lambda d, p: d.describe_point_objects([SCENE, SCENE[:150] * 3], prompts=p), 2),
    "image": (lambda d, p: d.describe_images([IMAGE, IMAGE[::-1].copy()], prompts=p), 2),
}


def configured(describer, decoding: str):
    describer.configure(max_new_tokens=8, **DECODING[decoding])
    return describer


def tokens(descriptions) -> list[tuple[int, ...]]:
    assert all(d.problem is None for d in descriptions), [d.problem for d in descriptions]
    return [d.token_ids for d in descriptions]


# Batching

@pytest.mark.parametrize("decoding", list(DECODING))
@pytest.mark.parametrize("backend", BACKENDS)
def test_regions_with_different_prompts_in_one_call_get_the_tokens_each_gets_alone(request, backend, decoding):
    describer = configured(request.getfixturevalue(backend), decoding)
    batched = describer.describe_image_regions(IMAGE, REGIONS, prompts=PROMPTS)
    alone = [describer.describe_image_regions(IMAGE, [box], prompts=[prompt])[0]
             for box, prompt in zip(REGIONS, PROMPTS)]
    assert tokens(batched) == tokens(alone)
    np.testing.assert_allclose([d.score for d in batched], [d.score for d in alone], atol=1e-5)


@pytest.mark.parametrize("modality", list(CALLS))
def test_every_modality_batches_prompts_of_different_lengths_as_one_at_a_time(onnx_describer, modality):
    call, rows = CALLS[modality]
    prompts = (PROMPTS * 2)[1:rows + 1]  # the longest, then shorter ones
    describer = configured(onnx_describer, "greedy")
    batched = tokens(call(describer, prompts))
    for row, prompt in enumerate(prompts):
        alone = tokens(call(describer, [prompt if other == row else "" for other in range(rows)]))
        assert batched[row] == alone[row]


def test_a_prompt_changes_what_is_generated(onnx_describer):
    describer = configured(onnx_describer, "greedy")
    plain = tokens(describer.describe_image_regions(IMAGE, REGIONS))
    prompted = tokens(describer.describe_image_regions(IMAGE, REGIONS, prompts=PROMPTS))
    assert prompted[0] == plain[0]  # "" is no prompt
    assert prompted[1:] != plain[1:]


@pytest.mark.parametrize("prompts", [None, [""] * len(REGIONS)], ids=["None", "all empty"])
def test_no_prompt_decodes_as_before_prompts_existed(onnx_describer, prompts):
    describer = configured(onnx_describer, "greedy")
    engine = describer.engine
    frames, boxes, frame_index = region_inputs(describer)
    expected, _ = engine.generate("image_region", frames, describer.settings, boxes, frame_index)
    ours = describer.describe_image_regions(IMAGE, REGIONS, prompts=prompts)
    assert tokens(ours) == [d.token_ids for d in expected]
    assert [d.score for d in ours] == [d.score for d in expected]


# Backends agree

@pytest.mark.parametrize("decoding", list(DECODING))
@pytest.mark.parametrize("modality", list(CALLS))
def test_onnxruntime_and_torch_give_the_same_tokens_for_prompted_rows(onnx_describer, torch_describer, modality,
                                                                      decoding):
    call, rows = CALLS[modality]
    prompts = PROMPTS[:rows] if rows > 2 else PROMPTS[1:3]
    ours = call(configured(onnx_describer, decoding), prompts)
    reference = call(configured(torch_describer, decoding), prompts)
    assert tokens(ours) == tokens(reference)
    np.testing.assert_allclose([d.score for d in ours], [d.score for d in reference], atol=1e-4)


# The KV cache on the device

def region_inputs(describer):
    from runtime import preprocess

    boxes, _ = preprocess.preprocess_boxes(REGIONS, IMAGE.shape, 0.0)
    return (preprocess.preprocess_image(IMAGE, describer.image_size)[None], boxes,
            np.zeros(len(REGIONS), np.int64))


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "3 beams"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_device_kv_cache_decodes_prompts_as_numpy_feeds_do(onnx_describer, tiny_bundle, kind, num_beams):
    bundle = load_bundle(tiny_bundle)
    runner = OnnxRunner(bundle)
    device, host = device_and_host(bundle, runner, kind)
    # min_new_tokens = max_new_tokens: every row runs to the end, so the cache reaches its full length
    settings = dataclasses.replace(bundle.manifest.generation, num_beams=num_beams, max_new_tokens=8,
                                   min_new_tokens=8)
    prompt_ids = [onnx_describer.encode_prompt(prompt) for prompt in PROMPTS]
    frames, boxes, frame_index = region_inputs(onnx_describer)
    ours, _ = device.generate("image_region", frames, settings, boxes, frame_index, prompt_ids=prompt_ids)
    theirs, _ = host.generate("image_region", frames, settings, boxes, frame_index, prompt_ids=prompt_ids)
    assert [d.token_ids for d in ours] == [d.token_ids for d in theirs]
    assert [d.score for d in ours] == [d.score for d in theirs]
    assert all(len(d.token_ids) == 8 for d in ours)


def test_the_rows_padding_crosses_to_the_device_once_with_the_prefill(onnx_describer, tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    engine = GraphEngine(bundle, OnnxRunner(bundle), device_kv=True)
    settings = dataclasses.replace(bundle.manifest.generation, max_new_tokens=6, min_new_tokens=6)
    prompt_ids = [onnx_describer.encode_prompt(prompt) for prompt in PROMPTS]
    frames, boxes, frame_index = region_inputs(onnx_describer)
    engine.generate("image_region", frames, settings, boxes, frame_index, prompt_ids=prompt_ids)
    rows = len(REGIONS)
    assert engine.transfers.decode_steps == 5
    assert engine.transfers.bytes_per_step == rows * 8 + rows * TOP_K * (4 + 8)  # as without prompts


# What cannot be described

def test_a_prompt_of_too_many_tokens_refuses_its_region_alone(onnx_describer):
    describer = configured(onnx_describer, "greedy")
    results = describer.describe_image_regions(IMAGE, REGIONS, prompts=[TOO_LONG] + PROMPTS[1:])
    count = len(describer.tokenizer.encode(TOO_LONG, add_special_tokens=False).ids)
    assert count > MAX_PROMPT_TOKENS
    assert results[0].problem == (f"prompt {TOO_LONG!r} has {count} tokens, more than the {MAX_PROMPT_TOKENS} a "
                                  "prompt may have: shorten it")
    assert results[0].text == ""
    alone = describer.describe_image_regions(IMAGE, REGIONS[1:], prompts=PROMPTS[1:])
    assert tokens(results[1:]) == tokens(alone)


def test_a_prompt_that_would_not_fit_the_models_positions_says_so(onnx_describer):
    describer = onnx_describer
    describer.configure(num_beams=1, max_new_tokens=100, min_new_tokens=0)  # 8 queries + BOS + 100: 19 left of 128
    with pytest.raises(ValueError, match="has 32 tokens, more than the 19 that fit the model's positions beside the "
                                         "soft prompt, BOS and max_new_tokens: shorten it or lower max_new_tokens"):
        describer.encode_prompt(QUESTION)
    assert len(describer.encode_prompt("what shape?")) == 10


def test_a_whole_image_with_too_long_a_prompt_is_refused_alone(onnx_describer):
    describer = configured(onnx_describer, "greedy")
    refused, described = describer.describe_images([IMAGE, IMAGE], prompts=[TOO_LONG, QUESTION])
    assert "more than the 32 a prompt may have" in refused.problem
    assert described.token_ids == describer.describe_images([IMAGE], prompts=[QUESTION])[0].token_ids


@pytest.mark.parametrize("prompts, message", [
    (["a"], "1 prompts for 4 regions: give one per region"),
    (PROMPTS + [""], "5 prompts for 4 regions"),
    ("what colour?", "prompts is one string"),
    (["", 3, "", ""], "prompt 1 is int 3, not a str"),
    (5, "prompts is int 5, not a sequence"),
])
def test_prompts_that_do_not_match_the_regions_are_refused(onnx_describer, prompts, message):
    with pytest.raises(ValueError, match=message):
        onnx_describer.describe_image_regions(IMAGE, REGIONS, prompts=prompts)


def test_the_prompt_count_is_checked_for_every_way_in(onnx_describer):
    with pytest.raises(ValueError, match="2 prompts for 1 regions"):
        onnx_describer.describe_point_regions(SCENE, CORNERS[:1], prompts=["a", "b"])
    with pytest.raises(ValueError, match="1 prompts for 2 regions"):
        onnx_describer.describe_point_objects([SCENE, SCENE], prompts=["a"])
    with pytest.raises(ValueError, match="1 prompts for 0 regions"):
        onnx_describer.describe_images([], prompts=["a"])
