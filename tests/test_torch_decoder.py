"""The torch backend's static-cache decoder (runtime/torch_decoder.py) decodes as the transformers reference does."""
import numpy as np
import pytest

from runtime import Cancelled, Describer
from runtime.torch_engine import TorchEngine
from tests.describer_inputs import CALLS


@pytest.fixture(scope="module")
def reference(torch_describer):  # tests/conftest.py's, named for what it is here
    return torch_describer


@pytest.fixture(scope="module")
def static(static_describer):
    return static_describer


def both(reference, static, modality, **settings):
    for describer in (reference, static):
        describer.configure(**settings)
    return CALLS[modality](reference), CALLS[modality](static)


@pytest.mark.parametrize("modality", list(CALLS))
def test_static_greedy_decoding_gives_the_references_tokens_and_scores(reference, static, modality):
    expected, ours = both(reference, static, modality, num_beams=1, max_new_tokens=8, min_new_tokens=0)
    assert [d.token_ids for d in ours] == [d.token_ids for d in expected]
    np.testing.assert_allclose([d.score for d in ours], [d.score for d in expected], atol=1e-5)


@pytest.mark.parametrize("modality", ["image_region", "pointcloud"])
def test_static_beam_search_gives_the_references_tokens(reference, static, modality):
    expected, ours = both(reference, static, modality, num_beams=3, max_new_tokens=8, min_new_tokens=2)
    assert [d.token_ids for d in ours] == [d.token_ids for d in expected]
    np.testing.assert_allclose([d.score for d in ours], [d.score for d in expected], atol=1e-5)


def test_min_new_tokens_hold_off_the_stop_token_as_in_the_reference(reference, static):
    expected, ours = both(reference, static, "image_region", num_beams=1, max_new_tokens=8, min_new_tokens=8)
    assert [d.token_ids for d in ours] == [d.token_ids for d in expected]
    assert all(len(d.token_ids) == 8 for d in ours)


def test_rows_padded_to_a_power_of_two_decode_as_unpadded(tiny_checkpoint, static):
    padded = Describer.from_checkpoint(tiny_checkpoint, decoder="static")
    padded.engine.static.pad_rows = True  # what CUDA graphs do; here without them
    for describer in (padded, static):
        describer.configure(num_beams=2, max_new_tokens=6, min_new_tokens=1)
    assert [d.token_ids for d in CALLS["image_region"](padded)] == \
        [d.token_ids for d in CALLS["image_region"](static)]
    assert [cache.rows for cache in padded.engine.static.caches.values()] == [8]  # 3 regions x 2 beams -> 8


def test_the_cache_is_reused_between_calls_of_the_same_shape(static):
    static.configure(num_beams=1, max_new_tokens=5, min_new_tokens=0)
    CALLS["image_region"](static)
    caches = dict(static.engine.static.caches)
    CALLS["image_region"](static)
    assert all(static.engine.static.caches[key] is cache for key, cache in caches.items())


def step_and_prompt(static, rows, max_length):
    decoder = static.engine.static
    width = static.engine.model.config.text_config().hidden_size
    prompt = np.random.default_rng(1).normal(size=(rows, 3, width)).astype(np.float32)
    return decoder.step(max_length), prompt, np.zeros(decoder.vocab_size, np.float32)


def test_a_step_past_the_caches_length_is_refused_with_the_fix(static):
    step, prompt, bias = step_and_prompt(static, 2, max_length=5)
    _, ids, past = step.top_tokens(prompt, np.full((2, 1), 2), None, bias, 1)  # 3 + BOS: 4 of 5
    _, ids, past = step.top_tokens(prompt[:, :0], ids, past, bias, 1)
    with pytest.raises(ValueError, match="holds 5 tokens and is full .* prompt \\+ BOS \\+ max_new_tokens"):
        step.top_tokens(prompt[:, :0], ids, past, bias, 1)


def test_reorder_gives_each_row_the_cache_of_the_row_it_names(static):
    step, prompt, bias = step_and_prompt(static, 2, max_length=8)
    _, ids, past = step.top_tokens(prompt, np.full((2, 1), 2), None, bias, 4)
    past = step.reorder(past, np.array([1, 1]))
    log_probs, _, _ = step.top_tokens(prompt[:, :0], np.full((2, 1), 5), past, bias, 4)
    np.testing.assert_array_equal(log_probs[0], log_probs[1])


def test_cancelling_stops_the_static_decoder_at_its_next_step(tiny_checkpoint):
    describer = Describer.from_checkpoint(tiny_checkpoint, decoder="static")
    describer.configure(num_beams=1, max_new_tokens=20, min_new_tokens=20)
    step_of = describer.engine.static.step

    def cancelling_step(*args, **kwargs):
        step = step_of(*args, **kwargs)
        top_tokens = step.top_tokens

        def counted(*step_args):
            describer.cancel()  # as another thread would, during the first step
            return top_tokens(*step_args)

        step.top_tokens = counted
        return step

    describer.engine.static.step = cancelling_step
    with pytest.raises(Cancelled, match="between decode steps"):
        CALLS["image_region"](describer)


def test_the_cpu_default_stays_the_transformers_reference(tiny_checkpoint):
    engine = TorchEngine(tiny_checkpoint)
    assert (engine.decoder, engine.precision, engine.cuda_graphs, engine.static) == ("transformers", "fp32", False,
                                                                                     None)


@pytest.mark.parametrize("options, message", [
    (dict(decoder="onnx"), "decoder 'onnx' is not one of transformers, static"),
    (dict(decoder="static", precision="fp8"), "precision 'fp8' is not one of fp32, fp16, bf16"),
    (dict(decoder="transformers", precision="fp16"), "fp32 reference.*use decoder='static'"),
    (dict(decoder="static", cuda_graphs=True), "CUDA graphs need a CUDA device .*cuda_graphs=False"),
])
def test_unusable_engine_options_are_refused_with_the_fix(tiny_checkpoint, options, message):
    with pytest.raises(ValueError, match=message):
        TorchEngine(tiny_checkpoint, **options)


def test_reduced_precision_on_the_cpu_decodes_every_region(tiny_checkpoint):
    describer = Describer.from_checkpoint(tiny_checkpoint, decoder="static", precision="bf16")
    describer.configure(num_beams=1, max_new_tokens=6, min_new_tokens=6)
    described = CALLS["image_region"](describer)
    assert all(len(d.token_ids) == 6 and np.isfinite(d.score) for d in described)
