"""Greedy and beam-search decoding over a KV-cached language-model step, in numpy.

Every row starts from a soft prompt (R, Q, D) followed by BOS and, where the row has one, its text prompt's tokens
(BLIP-2's layout: `Question: ... Answer:` after the query embeddings), and stops at the stop token ("\n"), which
only generated tokens are checked for. Rows whose text prompts differ in length are left-padded between the soft
prompt and BOS, and the step is told each row's padded positions, which no token attends and which take no position;
a row then decodes exactly as it would alone. Choices follow transformers' generate: min_new_tokens forbids the stop
token until that many tokens exist. Beam search is transformers 4.28's, which released RegionBLIP decoded with: it
ranks hypotheses by sum of log-probs / length (length_penalty 1), the length counting the BOS that 4.28 starts from
and not the stop token (transformers 5 counts new tokens only, and ranks differently); training/generation.py's
beam_search is the same. A text prompt does not count either: BLIP-2 under 4.28 embedded it into inputs_embeds, and
generate's input ids were that one BOS alone. A description's score is the mean log-prob, under the model's
unmodified distribution, of its tokens up to and including the stop token: the same score the torch reference
reports.

A step answers with each row's few best next tokens, not the whole vocabulary: greedy takes the best,
beam search each beam's best 2 x num_beams, which hold the best 2 x num_beams of all its row's
beam x vocabulary candidates. The bundle's llm graph ranks them itself; rank_logits computes the same
from logits, for steps that only have those.
"""
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from contract.generation import GenerationSettings


class LanguageModelStep(Protocol):
    """One forward pass of the LLM with a KV cache, answering with the best next tokens.

    prefix_embeds (B, P, D) (P may be 0) are placed before the embeddings of input_ids (B, T). `padding` (B, 2)
    int64, given to every call of a decode whose rows were padded (and to none otherwise), holds each row's padded
    positions [start, end) (export/llm.py): the same for a whole decode, and the same for all beams of a row, so
    beam search's reorders never change it. The next tokens are ranked by the last position's log_softmax plus
    log_prob_bias (V,) (0, or -inf for a token decoding forbids), best first, equal values lower id first.
    top_tokens returns at least k of them per row, (their unbiased log-probs (B, C), their ids (B, C)) with C >= k
    (or the whole vocabulary when it is smaller), and the grown cache. `past` is None on the first call;
    `reorder(past, rows)` selects cache rows for beam search.
    """

    vocab_size: int

    def top_tokens(self, prefix_embeds: np.ndarray, input_ids: np.ndarray, past: Any, log_prob_bias: np.ndarray,
                   k: int, padding: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, Any]: ...

    def reorder(self, past: Any, rows: np.ndarray) -> Any: ...


class Cancelled(RuntimeError):
    """Describing stopped because the describer was cancelled (Describer.cancel(), e.g. at shutdown)."""


def never() -> bool:
    return False


@dataclass(frozen=True)
class Decoded:
    token_ids: tuple[int, ...]  # generated tokens, stop token excluded
    score: float  # mean log-prob of the tokens, stop token included when generated


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def rank_logits(logits: np.ndarray, log_prob_bias: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best next tokens of each row of logits (B, V), ranked as LanguageModelStep ranks them: (their
    unbiased log-probs (B, k), their ids (B, k)). What the llm graph's top_log_probs and top_ids hold, for
    steps that have only logits."""
    log_probs = log_softmax(logits)  # (B, V)
    ranked = log_probs + log_prob_bias
    k = min(k, ranked.shape[-1])
    kth = -np.partition(-ranked, k - 1, axis=-1)[:, k - 1:k]  # (B, 1): each row's k-th best value
    rows, ids = np.nonzero(ranked >= kth)  # every token that may rank in the top k, ties at the k-th included
    order = np.lexsort((ids, -ranked[rows, ids], rows))  # by row, then best first, then lower id first
    rows, ids = rows[order], ids[order]
    first = np.searchsorted(rows, np.arange(len(ranked)))  # where each row's tokens start
    top_ids = ids[first[:, None] + np.arange(k)].astype(np.int64)  # (B, k)
    return np.take_along_axis(log_probs, top_ids, axis=-1), top_ids


def text_inputs(prompt_ids, settings: GenerationSettings) -> tuple[np.ndarray, np.ndarray]:
    """Each row's text after its soft prompt, the rows left-padded to the longest: input_ids (R, T), pads then
    BOS then the row's prompt tokens `prompt_ids[r]` (BOS not included), and the number of pads of each row (R,)."""
    longest = max(map(len, prompt_ids), default=0)
    input_ids = np.full((len(prompt_ids), 1 + longest), settings.pad_token_id, dtype=np.int64)
    pads = np.array([longest - len(ids) for ids in prompt_ids], dtype=np.int64)
    for row, ids in enumerate(prompt_ids):
        input_ids[row, pads[row]] = settings.bos_token_id
        input_ids[row, pads[row] + 1:] = ids
    return input_ids, pads


def decode(step: LanguageModelStep, prompt: np.ndarray, settings: GenerationSettings,
           cancelled: Callable[[], bool] = never, prompt_ids=None) -> list[Decoded]:
    """Describe each row of prompt (R, Q, D); R may be 0. `prompt_ids`: each row's text prompt tokens (a sequence
    per row, empty for none; BOS not included), or None for none at all. `cancelled` is asked before every LLM
    step; when it says True, Cancelled is raised, so that a long job stops within one step."""
    if len(prompt) == 0:
        return []
    if prompt_ids is not None and len(prompt_ids) != len(prompt):
        raise ValueError(f"{len(prompt_ids)} text prompts for {len(prompt)} soft prompts: give one per row")
    input_ids, pads = text_inputs(prompt_ids if prompt_ids is not None else [()] * len(prompt), settings)
    # Padded rows sit at [Q, Q + pads) of the cache; without pads the step is called as before prompts existed.
    padding = np.stack([np.full_like(pads, prompt.shape[1]), prompt.shape[1] + pads], axis=1) if pads.any() else None
    step = _Cancellable(step, cancelled)
    if settings.num_beams == 1:
        return _greedy(step, prompt, input_ids, padding, settings)
    return _beam_search(step, prompt, input_ids, padding, settings)


class _Cancellable:
    """A LanguageModelStep that raises Cancelled instead of running once `cancelled()` is true."""

    def __init__(self, step: LanguageModelStep, cancelled: Callable[[], bool]):
        self.step, self.cancelled = step, cancelled
        self.vocab_size = step.vocab_size

    def top_tokens(self, prefix_embeds, input_ids, past, log_prob_bias, k, padding=None):
        if self.cancelled():
            raise Cancelled("describing was cancelled between decode steps (the describer is shutting down)")
        padded = {} if padding is None else {"padding": padding}  # steps that never pad need not take it
        return self.step.top_tokens(prefix_embeds, input_ids, past, log_prob_bias, k, **padded)

    def reorder(self, past, rows):
        return self.step.reorder(past, rows)


def _stop_bias(vocab_size: int, settings: GenerationSettings) -> Callable[[int], np.ndarray]:
    """The log_prob_bias of the step that chooses token number `generated` (from 0): -inf for the stop token
    while fewer than min_new_tokens tokens exist."""
    allowed = np.zeros(vocab_size, dtype=np.float32)
    forbidden = allowed.copy()
    forbidden[settings.eos_token_id] = -np.inf
    return lambda generated: forbidden if generated < settings.min_new_tokens else allowed


def _greedy(step: LanguageModelStep, prompt: np.ndarray, input_ids: np.ndarray, padding: np.ndarray | None,
            settings: GenerationSettings) -> list[Decoded]:
    rows = len(prompt)
    bias = _stop_bias(step.vocab_size, settings)
    top_log_probs, top_ids, past = step.top_tokens(prompt, input_ids, None, bias(0), 1, padding)
    tokens: list[list[int]] = [[] for _ in range(rows)]
    log_prob_sums = np.zeros(rows, dtype=np.float64)
    finished = np.zeros(rows, dtype=bool)
    empty_prefix = prompt[:, :0]
    for generated in range(settings.max_new_tokens):
        choice = top_ids[:, 0].astype(np.int64)  # (R,)
        for row in np.flatnonzero(~finished):
            tokens[row].append(int(choice[row]))
            log_prob_sums[row] += top_log_probs[row, 0]
        finished |= choice == settings.eos_token_id
        if finished.all() or generated + 1 == settings.max_new_tokens:
            break
        choice[finished] = settings.pad_token_id
        top_log_probs, top_ids, past = step.top_tokens(empty_prefix, choice[:, None], past, bias(generated + 1), 1,
                                                       padding)
    return [_decoded(row_tokens, total, settings) for row_tokens, total in zip(tokens, log_prob_sums)]


def _decoded(tokens: list[int], log_prob_sum: float, settings: GenerationSettings) -> Decoded:
    kept = tuple(tokens[:-1] if tokens and tokens[-1] == settings.eos_token_id else tokens)
    return Decoded(token_ids=kept, score=float(log_prob_sum / max(len(tokens), 1)))


def _beam_search(step: LanguageModelStep, prompt: np.ndarray, input_ids: np.ndarray, padding: np.ndarray | None,
                 settings: GenerationSettings) -> list[Decoded]:
    rows, beams, vocab = len(prompt), settings.num_beams, step.vocab_size
    bias = _stop_bias(vocab, settings)
    prompt = np.repeat(prompt, beams, axis=0)  # (R*K, Q, D), row r's beams are contiguous
    input_ids = np.repeat(input_ids, beams, axis=0)
    # A reorder keeps each row's beams among its own (next_rows below), so their padding never moves.
    padding = None if padding is None else np.repeat(padding, beams, axis=0)
    top_log_probs, top_ids, past = step.top_tokens(prompt, input_ids, None, bias(0), 2 * beams, padding)
    # Only beam 0 is live at the start, so the first step picks K distinct tokens.
    beam_sums = np.tile(np.array([0.0] + [-np.inf] * (beams - 1)), (rows, 1))  # (R, K)
    beam_tokens = [[[] for _ in range(beams)] for _ in range(rows)]
    finished: list[list[tuple[float, list[int], float]]] = [[] for _ in range(rows)]  # (rank score, tokens, sum)
    done = np.zeros(rows, dtype=bool)
    empty_prefix = prompt[:, :0]
    for generated in range(settings.max_new_tokens):
        columns = top_ids.shape[-1]
        ranked = (top_log_probs + bias(generated)[top_ids]).reshape(rows, beams, columns)  # (R, K, C)
        totals = (beam_sums[..., None] + ranked).reshape(rows, -1)  # (R, K*C)
        # A candidate's index among all the row's beam x vocabulary ones, beam-major: equal totals rank in
        # this order, as a stable sort of every candidate would rank them.
        flat_ids = (np.arange(beams)[:, None] * vocab + top_ids.reshape(rows, beams, columns)).reshape(rows, -1)
        top = np.lexsort((flat_ids, -totals), axis=-1)[:, : 2 * beams]  # (R, 2K) positions in totals
        next_rows = np.arange(rows * beams, dtype=np.int64).reshape(rows, beams)
        next_tokens = np.full((rows, beams), settings.pad_token_id, dtype=np.int64)
        next_sums = np.full((rows, beams), -np.inf)
        next_beam_tokens = [[[] for _ in range(beams)] for _ in range(rows)]
        for row in range(rows):
            if done[row]:
                continue
            kept = 0
            for rank, index in enumerate(top[row]):
                beam, token = divmod(int(flat_ids[row, index]), vocab)
                total = float(totals[row, index])
                if not np.isfinite(total):
                    break
                sequence = beam_tokens[row][beam] + [token]
                if token == settings.eos_token_id:
                    if rank < beams:  # as transformers: a stop outside the top K does not finish a hypothesis
                        # its length: the BOS and the tokens before the stop
                        _add_hypothesis(finished[row], sequence, total, generated + 1, beams)
                    continue
                next_rows[row, kept] = row * beams + beam
                next_tokens[row, kept] = token
                next_sums[row, kept] = total
                next_beam_tokens[row][kept] = sequence
                kept += 1
                if kept == beams:
                    break
            # 4.28's heuristic: the best candidate, a stop or not, over the BOS plus the tokens so far.
            best_attainable = totals[row, top[row, 0]] / (generated + 2)
            done[row] = len(finished[row]) == beams and finished[row][-1][0] >= best_attainable
        if done.all() or generated + 1 == settings.max_new_tokens:
            break
        beam_sums, beam_tokens = next_sums, next_beam_tokens
        past = step.reorder(past, next_rows.reshape(-1))
        top_log_probs, top_ids, past = step.top_tokens(empty_prefix, next_tokens.reshape(-1, 1), past,
                                                       bias(generated + 1), 2 * beams, padding)
    results = []
    for row in range(rows):
        if not done[row]:
            for beam in range(beams):
                if np.isfinite(next_sums[row, beam]):
                    tokens = next_beam_tokens[row][beam]
                    _add_hypothesis(finished[row], tokens, next_sums[row, beam], 1 + len(tokens), beams)
        _, tokens, total = finished[row][0]
        results.append(_decoded(tokens, total, settings))
    return results


def _add_hypothesis(hypotheses: list, tokens: list[int], log_prob_sum: float, length: int, beams: int) -> None:
    """Keep the `beams` best hypotheses, best first, ranked by log_prob_sum / length (4.28's length: the input ids
    the hypothesis holds, the initial BOS and the tokens before the stop)."""
    hypotheses.append((log_prob_sum / length, tokens, log_prob_sum))
    hypotheses.sort(key=lambda h: -h[0])
    del hypotheses[beams:]
