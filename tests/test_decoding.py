"""The numpy decoder chooses what the torch reference chooses (transformers' greedy generate, transformers 4.28's beam
search), and scores like it."""
import numpy as np
import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from contract.generation import GenerationSettings
from runtime.decoding import Cancelled, decode, rank_logits
from training.generation import generate_from_prompt

EOS = 7


@pytest.fixture(scope="module")
def opt():
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
                       max_position_embeddings=128, word_embed_proj_dim=32, bos_token_id=2, eos_token_id=2,
                       pad_token_id=1)
    return OPTForCausalLM(config).eval()


class RecomputingStep:
    """A LanguageModelStep over the torch OPT that keeps the embeddings so far as its 'cache'."""

    def __init__(self, model):
        self.model = model
        self.vocab_size = model.config.vocab_size

    @torch.no_grad()
    def top_tokens(self, prefix_embeds, input_ids, past, log_prob_bias, k):
        new = torch.cat([torch.from_numpy(prefix_embeds),
                         self.model.get_input_embeddings()(torch.from_numpy(input_ids))], dim=1)
        embeds = new if past is None else torch.cat([past, new], dim=1)
        logits = self.model(inputs_embeds=embeds).logits[:, -1]
        return (*rank_logits(logits.numpy(), log_prob_bias, k), embeds)

    def reorder(self, past, rows):
        return past[torch.from_numpy(rows)]


@pytest.fixture(scope="module")
def prompts(opt):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(5, 4, opt.config.hidden_size, generator=generator)  # (R, Q, D)


def settings(**overrides):
    values = dict(bos_token_id=2, eos_token_id=EOS, pad_token_id=1, max_new_tokens=12, min_new_tokens=3)
    values.update(overrides)
    return GenerationSettings(**values)


def reference(opt, prompts, num_beams, min_new_tokens=3, max_new_tokens=12):
    out = generate_from_prompt(opt, prompts, num_beams=num_beams, max_new_tokens=max_new_tokens,
                               min_new_tokens=min_new_tokens, eos_token_id=EOS)
    tokens = [[t for t in row.tolist() if t != 1] for row in out.token_ids]
    return [tuple(t[:-1] if t and t[-1] == EOS else t) for t in tokens], out.scores.tolist()


@pytest.mark.parametrize("min_new_tokens", [0, 3])
def test_greedy_tokens_and_scores_equal_the_torch_reference(opt, prompts, min_new_tokens):
    expected_tokens, expected_scores = reference(opt, prompts, 1, min_new_tokens)
    decoded = decode(RecomputingStep(opt), prompts.numpy(), settings(min_new_tokens=min_new_tokens))
    assert [d.token_ids for d in decoded] == expected_tokens
    np.testing.assert_allclose([d.score for d in decoded], expected_scores, atol=1e-5)


def test_beam_search_tokens_equal_the_torch_reference_s_beam_search(opt, prompts):
    expected_tokens, expected_scores = reference(opt, prompts, 4)
    decoded = decode(RecomputingStep(opt), prompts.numpy(), settings(num_beams=4))
    assert [d.token_ids for d in decoded] == expected_tokens
    np.testing.assert_allclose([d.score for d in decoded], expected_scores, atol=1e-5)


def test_beam_search_scores_at_least_as_well_as_greedy(opt, prompts):
    greedy = decode(RecomputingStep(opt), prompts.numpy(), settings())
    beam = decode(RecomputingStep(opt), prompts.numpy(), settings(num_beams=4))
    assert all(b.score >= g.score - 1e-6 for b, g in zip(beam, greedy))
    assert any(b.score > g.score + 1e-4 for b, g in zip(beam, greedy))


class LastTokenStep:
    """A LanguageModelStep whose next-token probabilities depend on the last token only: NEXT[last]."""

    vocab_size = 5  # 0 pad, 1 BOS, 2 and 3 words, 4 the stop token
    NEXT = {1: [0.05, 0.0, 0.6, 0.3, 0.05], 2: [0.05, 0.05, 0.35, 0.15, 0.4], 3: [0.2, 0.2, 0.2, 0.2, 0.2]}

    def top_tokens(self, prefix_embeds, input_ids, past, log_prob_bias, k):
        with np.errstate(divide="ignore"):
            logits = np.log(np.array([self.NEXT.get(int(last), self.NEXT[3]) for last in input_ids[:, -1]]))
        return (*rank_logits(logits, log_prob_bias, k), None)

    def reorder(self, past, rows):
        return past


def test_beam_search_counts_the_bos_in_a_hypothesis_s_length():
    # After "2": stopping (sum ln .6 + ln .4 = -1.43, length 2: BOS and "2") ranks below "2 2", which runs to
    # max_new_tokens (sum ln .6 + ln .35 = -1.56, length 3 with the BOS). Counting new tokens only, it would rank above.
    chosen = GenerationSettings(bos_token_id=1, eos_token_id=4, pad_token_id=0, max_new_tokens=2, min_new_tokens=1,
                                num_beams=2)
    [decoded] = decode(LastTokenStep(), np.zeros((1, 1, 1), np.float32), chosen)
    assert decoded.token_ids == (2, 2)
    assert decoded.score == pytest.approx((np.log(0.6) + np.log(0.35)) / 2)


def test_min_new_tokens_delays_the_stop_token(opt, prompts):
    for d in decode(RecomputingStep(opt), prompts.numpy(), settings(min_new_tokens=5, max_new_tokens=8)):
        assert len(d.token_ids) >= 5 and EOS not in d.token_ids


def test_zero_rows_decode_to_nothing(opt):
    assert decode(RecomputingStep(opt), np.zeros((0, 4, 32), np.float32), settings()) == []


@pytest.mark.parametrize("bad", [dict(min_new_tokens=5, max_new_tokens=4), dict(max_new_tokens=0),
                                 dict(num_beams=0)])
def test_inconsistent_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        settings(**bad)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_decoding_raises_cancelled_before_the_first_step_after_cancel(opt, prompts, num_beams):
    step, calls = RecomputingStep(opt), []

    def cancelled():
        calls.append(1)
        return len(calls) > 4  # four steps run, the fifth is refused

    with pytest.raises(Cancelled):
        decode(step, prompts.numpy(), settings(num_beams=num_beams, min_new_tokens=12), cancelled)
    assert len(calls) == 5


def test_the_torch_reference_stops_early_when_told_to(opt, prompts):
    out = generate_from_prompt(opt, prompts, num_beams=1, max_new_tokens=12, min_new_tokens=12, eos_token_id=EOS,
                               stop=lambda: True)
    assert out.token_ids.shape[1] == 1


# Ranking: each step answers with a few best tokens, and that is all decoding needs

def test_ranking_logits_is_a_stable_sort_of_the_biased_log_probs():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 4, (6, 40)).astype(np.float32)  # many exact ties
    bias = np.zeros(40, np.float32)
    bias[[3, 7]] = -np.inf
    log_probs, ids = rank_logits(logits, bias, 16)
    shifted = logits - logits.max(-1, keepdims=True)
    expected_log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected_ids = np.argsort(-(expected_log_probs + bias), axis=-1, kind="stable")[:, :16]
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(log_probs, np.take_along_axis(expected_log_probs, expected_ids, -1))


def test_ranking_logits_returns_unbiased_log_probs_of_the_biased_ranking():
    logits = np.array([[3.0, 2.0, 1.0, 0.0]], np.float32)
    log_probs, ids = rank_logits(logits, np.array([-np.inf, 0, 0, 0], np.float32), 2)
    assert ids.tolist() == [[1, 2]]
    shifted = logits[0] - 3.0
    np.testing.assert_allclose(log_probs[0], (shifted - np.log(np.exp(shifted).sum()))[[1, 2]], rtol=1e-6)


class RandomLogitsStep:
    """A LanguageModelStep whose logits are a fixed random function of each row's prompt and tokens so far. They are
    small integers, so that tokens (and beam totals) tie exactly, and the stop token is often among the best."""

    vocab_size = 40

    def __init__(self, columns: int | None):
        self.columns = columns or self.vocab_size  # how many tokens each step ranks (None: all of them)

    def top_tokens(self, prefix_embeds, input_ids, past, log_prob_bias, k):
        history = np.concatenate([prefix_embeds[:, :, 0].astype(np.int64) if past is None else past, input_ids], 1)
        logits = np.stack([self._logits(row) for row in history])
        return (*rank_logits(logits, log_prob_bias, max(k, self.columns)), history)

    def _logits(self, history) -> np.ndarray:
        rng = np.random.default_rng([int(t) for t in history])
        logits = rng.integers(0, 5, self.vocab_size).astype(np.float32)
        logits[EOS] = rng.integers(0, 6)
        return logits

    def reorder(self, past, rows):
        return past[rows]


@pytest.mark.parametrize("num_beams", [1, 5])
def test_the_graph_s_top_16_decode_exactly_as_the_whole_vocabulary(num_beams):
    prompts = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)  # six distinct rows
    chosen = settings(num_beams=num_beams, min_new_tokens=3, max_new_tokens=10)
    ranked = decode(RandomLogitsStep(16), prompts, chosen)
    whole = decode(RandomLogitsStep(None), prompts, chosen)
    assert [d.token_ids for d in ranked] == [d.token_ids for d in whole]
    assert [d.score for d in ranked] == [d.score for d in whole]


def test_the_random_step_stops_early_unless_min_new_tokens_forbids_it():
    prompts = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((1, 2, 3), np.float32)
    free = decode(RandomLogitsStep(16), prompts, settings(min_new_tokens=0, max_new_tokens=10))
    held = decode(RandomLogitsStep(16), prompts, settings(min_new_tokens=3, max_new_tokens=10))
    assert any(len(d.token_ids) < 3 for d in free)
    assert all(len(d.token_ids) >= 3 for d in held)
