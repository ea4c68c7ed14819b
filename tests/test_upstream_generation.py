"""Released RegionBLIP's settings decode as released RegionBLIP decoded: tokens recorded with transformers 4.28.

tests/data/upstream_generation holds a tiny random OPT, 8 soft prompts and what 4.28's generate chose from them,
called as RegionBLIP_opt.generate calls it (max_length=30, min_length=8, num_beams=5, and greedy); it was written by
tools/upstream_generation_fixture.py, which says how to rerun it.
"""
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import OPTConfig, OPTForCausalLM

from contract.generation import RELEASE_EVALUATION, Decoding, GenerationSettings
from runtime.decoding import decode
from tests.test_decoding import RecomputingStep
from training.generation import generate_from_prompt

DATA = Path(__file__).parent / "data" / "upstream_generation"
FIXTURE = json.loads((DATA / "fixture.json").read_text())
STOP = FIXTURE["stop_token_id"]
GREEDY_RELEASE = replace(RELEASE_EVALUATION, num_beams=1)


def upstream(sequences: list[list[int]]) -> list[tuple[int, ...]]:
    """4.28's rows as our decoders report them: without the initialised BOS, the stop token and the padding."""
    return [_before_stop(row[1:]) for row in sequences]


def _before_stop(tokens: list[int]) -> tuple[int, ...]:
    return tuple(tokens[: tokens.index(STOP)] if STOP in tokens else tokens)


@pytest.fixture(scope="module")
def opt():
    model = OPTForCausalLM(OPTConfig(**FIXTURE["config"])).eval()
    missing, unexpected = model.load_state_dict(load_file(DATA / "model.safetensors"), strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # the head is tied to the input embeddings
    return model


@pytest.fixture(scope="module")
def prompts():
    return load_file(DATA / "prompts.safetensors")["prompts"]  # (8, Q, D)


def torch_tokens(opt, prompts, decoding: Decoding) -> list[tuple[int, ...]]:
    out = generate_from_prompt(opt, prompts, num_beams=decoding.num_beams, max_new_tokens=decoding.max_new_tokens,
                               min_new_tokens=decoding.min_new_tokens, eos_token_id=STOP)
    return [_before_stop(row) for row in out.token_ids.tolist()]


def numpy_tokens(opt, prompts, decoding: Decoding) -> list[tuple[int, ...]]:
    settings = GenerationSettings(bos_token_id=opt.config.bos_token_id, eos_token_id=STOP,
                                  pad_token_id=opt.config.pad_token_id, max_new_tokens=decoding.max_new_tokens,
                                  min_new_tokens=decoding.min_new_tokens, num_beams=decoding.num_beams)
    return [d.token_ids for d in decode(RecomputingStep(opt), prompts.numpy(), settings)]


def test_the_fixture_was_recorded_with_upstream_s_call():
    assert FIXTURE["recorded_with"]["transformers"].startswith("4.28.")
    call = FIXTURE["upstream_call"]
    assert (call["max_length"], call["min_length"], call["num_beams"], call["length_penalty"]) == (30, 8, 5, 1.0)


def test_the_fixture_rows_stop_at_many_lengths():
    lengths = [len(tokens) for tokens in upstream(FIXTURE["beam_sequences"])]
    assert min(lengths) == 7 and max(lengths) == 29 and len(set(lengths)) >= 4


def test_release_beam_search_gives_upstream_s_tokens(opt, prompts):
    assert torch_tokens(opt, prompts, RELEASE_EVALUATION) == upstream(FIXTURE["beam_sequences"])


def test_release_greedy_decoding_gives_upstream_s_tokens(opt, prompts):
    assert torch_tokens(opt, prompts, GREEDY_RELEASE) == upstream(FIXTURE["greedy_sequences"])


def test_the_runtime_s_release_beam_search_gives_upstream_s_tokens(opt, prompts):
    assert numpy_tokens(opt, prompts, RELEASE_EVALUATION) == upstream(FIXTURE["beam_sequences"])


def test_the_runtime_s_release_greedy_decoding_gives_upstream_s_tokens(opt, prompts):
    assert numpy_tokens(opt, prompts, GREEDY_RELEASE) == upstream(FIXTURE["greedy_sequences"])


def test_reading_upstream_s_lengths_as_new_tokens_does_not_give_its_tokens(opt, prompts):
    # 30/8 new tokens, 4.28's max_length/min_length taken as counting only new tokens: when recorded, 5 of the 8
    # beam rows and 2 of the 8 greedy rows came out different.
    new_tokens_only = Decoding(max_new_tokens=30, min_new_tokens=8, num_beams=5)
    beam = torch_tokens(opt, prompts, new_tokens_only)
    greedy = torch_tokens(opt, prompts, replace(new_tokens_only, num_beams=1))
    assert sum(a != b for a, b in zip(beam, upstream(FIXTURE["beam_sequences"]))) > 0
    assert sum(a != b for a, b in zip(greedy, upstream(FIXTURE["greedy_sequences"]))) > 0


def test_transformers_5_s_own_beam_search_does_not_give_upstream_s_tokens(opt, prompts):
    # Why training.generation writes 4.28's beam search out: transformers 5 divides by the new tokens only, without
    # the BOS, which ranked 2 of the 8 rows differently when recorded.
    bos = torch.full((len(prompts), 1), opt.config.bos_token_id)
    inputs_embeds = torch.cat([prompts, opt.get_input_embeddings()(bos)], dim=1)
    with torch.no_grad():
        out = opt.generate(inputs_embeds=inputs_embeds, attention_mask=torch.ones(inputs_embeds.shape[:2]),
                           num_beams=5, max_new_tokens=RELEASE_EVALUATION.max_new_tokens,
                           min_new_tokens=RELEASE_EVALUATION.min_new_tokens, eos_token_id=STOP,
                           pad_token_id=opt.config.pad_token_id, do_sample=False)
    ours = [_before_stop(row) for row in out.tolist()]
    assert sum(a != b for a, b in zip(ours, upstream(FIXTURE["beam_sequences"]))) > 0
