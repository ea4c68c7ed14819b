"""Caption decoding from a soft prompt: greedy (OPT generate) or beam search, then a scoring pass for mean log-probs.

Released RegionBLIP decoded with transformers 4.28, which, generating from embeddings, starts from one initialised
BOS input id; its beam search divides a hypothesis's log-prob sum by a length that counts that BOS. transformers 5
counts only new tokens, which ranks hypotheses differently, so beam search here is 4.28's, written out; greedy
decoding ranks nothing by length and stays transformers' own. tests/test_upstream_generation.py checks both against
tokens recorded with 4.28.

A text prompt follows the soft prompt as BLIP-2 places one: input_ids = BOS and the prompt's tokens, left-padded
(pads between the soft prompt and BOS, masked by attention_mask) where rows differ in length. BLIP-2 under 4.28
embedded them into inputs_embeds, so generate's input ids were still the one initialised BOS: the beam length
counts neither the prompt nor its padding.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList


@dataclass
class Generated:
    token_ids: torch.Tensor  # (R, T) generated tokens, ending with the eos id; pad id after it
    scores: torch.Tensor  # (R,) mean log-prob of the tokens up to and including eos


def tokens_before_stop(token_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(R, T) bool: the tokens up to and including the first eos (what follows is padding)."""
    is_eos = (token_ids == eos_token_id).long()
    return (is_eos.cumsum(1) - is_eos) == 0


class _Stop(StoppingCriteria):
    def __init__(self, stop: Callable[[], bool]):
        self.stop = stop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.stop(), dtype=torch.bool, device=input_ids.device)


def never() -> bool:
    return False


@torch.no_grad()
def generate_from_prompt(
    language_model: nn.Module,
    prompt: torch.Tensor,
    *,
    num_beams: int,
    max_new_tokens: int,
    min_new_tokens: int,
    eos_token_id: int,
    stop: Callable[[], bool] | None = None,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> Generated:
    """Decode from `prompt` (R, Q, D) soft tokens followed by `input_ids` (R, T) (default: BOS alone), as
    BLIP-2/RegionBLIP inference does: BOS and a text prompt's tokens, left-padded where `attention_mask` (R, T) is 0.
    `stop`, asked after every step, ends generation early when it says True (the caller decides what that means)."""
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"need 0 <= min_new_tokens <= max_new_tokens, got {min_new_tokens} and {max_new_tokens}")
    config = language_model.config
    embed = language_model.get_input_embeddings()
    if input_ids is None:
        input_ids = torch.full((prompt.shape[0], 1), config.bos_token_id, dtype=torch.long, device=prompt.device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if input_ids.shape != attention_mask.shape or input_ids.shape[0] != prompt.shape[0]:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} must "
                         f"both be (R, T), one row per soft prompt ({prompt.shape[0]})")
    inputs_embeds = torch.cat([prompt, embed(input_ids)], dim=1)  # (R, Q + T, D)
    attention_mask = torch.cat([torch.ones(prompt.shape[:2], dtype=torch.long, device=prompt.device),
                                attention_mask.long()], dim=1)  # (R, Q + T)
    if num_beams == 1:
        token_ids = language_model.generate(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_token_id=eos_token_id,
            pad_token_id=config.pad_token_id,
            do_sample=False,
            stopping_criteria=StoppingCriteriaList([_Stop(stop)]) if stop is not None else None,
        )  # (R, T)
    else:
        token_ids = beam_search(language_model, inputs_embeds, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                min_new_tokens=min_new_tokens, eos_token_id=eos_token_id,
                                pad_token_id=config.pad_token_id, stop=stop or never, attention_mask=attention_mask)
    # Re-score the chosen tokens with the model's own (unprocessed) distribution: one pass, same for greedy and beam.
    valid = tokens_before_stop(token_ids, eos_token_id)
    logits = language_model(
        inputs_embeds=torch.cat([inputs_embeds, embed(token_ids)], dim=1),
        attention_mask=torch.cat([attention_mask, valid.long()], dim=1),
    ).logits[:, inputs_embeds.shape[1] - 1 : -1]  # (R, T, V): position t predicts token t
    log_probs = logits.float().log_softmax(-1).gather(-1, token_ids[..., None]).squeeze(-1)  # (R, T)
    scores = (log_probs * valid).sum(1) / valid.sum(1).clamp(min=1)
    return Generated(token_ids=token_ids, scores=scores)


@torch.no_grad()
def beam_search(language_model: nn.Module, inputs_embeds: torch.Tensor, *, num_beams: int, max_new_tokens: int,
                min_new_tokens: int, eos_token_id: int, pad_token_id: int,
                stop: Callable[[], bool] = never, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """transformers 4.28's beam search (length_penalty 1, early_stopping False) from `inputs_embeds` (R, L, D), the
    soft prompt, BOS and any text prompt, padded where `attention_mask` (R, L) is 0 (default: nowhere): (R, T) new
    tokens, each row its best hypothesis, ending with eos unless it ran to max_new_tokens, then pad.

    A hypothesis ranks by its log-prob sum / its length, the length counting the BOS and not the stop token. A row is
    done once it holds num_beams finished hypotheses and the worst ranks at least as high as this step's best
    candidate sum over the BOS plus the tokens so far. runtime/decoding.py's numpy beam search is the same, and
    tests/test_decoding.py holds them together."""
    rows, beams = inputs_embeds.shape[0], num_beams
    device = inputs_embeds.device
    embeds = inputs_embeds.repeat_interleave(beams, dim=0)  # (R*K, L, D), row r's beams are contiguous
    if attention_mask is None:
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=device)
    attention_mask = attention_mask.repeat_interleave(beams, dim=0)  # (R*K, L)
    out = language_model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    # Only beam 0 is live at the start, so the first step picks K distinct tokens.
    beam_sums = torch.full((rows, beams), -torch.inf, device=device)
    beam_sums[:, 0] = 0
    beam_tokens = [[[] for _ in range(beams)] for _ in range(rows)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(rows)]  # (rank score, tokens), best first
    done = [False] * rows
    for generated in range(max_new_tokens):
        log_probs = out.logits[:, -1].float().log_softmax(-1)  # (R*K, V)
        if generated < min_new_tokens:
            log_probs[:, eos_token_id] = -torch.inf
        vocab = log_probs.shape[-1]
        totals = (beam_sums.reshape(-1, 1) + log_probs).reshape(rows, -1)  # (R, K*V)
        top_totals, top_flat = (t.tolist() for t in totals.topk(2 * beams, dim=-1))  # (R, 2K), best first
        next_rows = list(range(rows * beams))
        next_tokens = [pad_token_id] * (rows * beams)
        next_sums = [[-torch.inf] * beams for _ in range(rows)]
        next_beam_tokens = [[[] for _ in range(beams)] for _ in range(rows)]
        for row in range(rows):
            if done[row]:
                continue
            kept = 0
            for rank, (total, flat) in enumerate(zip(top_totals[row], top_flat[row])):
                if total == -torch.inf:
                    break
                beam, token = divmod(flat, vocab)
                if token == eos_token_id:
                    if rank < beams:  # as 4.28: a stop outside the top K does not finish a hypothesis
                        # its length: the BOS and the tokens before the stop
                        _add_hypothesis(finished[row], beam_tokens[row][beam] + [token], total, generated + 1, beams)
                    continue
                next_rows[row * beams + kept] = row * beams + beam
                next_tokens[row * beams + kept] = token
                next_sums[row][kept] = total
                next_beam_tokens[row][kept] = beam_tokens[row][beam] + [token]
                kept += 1
                if kept == beams:
                    break
            # 4.28's heuristic: the best candidate, a stop or not, over the BOS plus the tokens so far.
            best_attainable = top_totals[row][0] / (generated + 2)
            done[row] = len(finished[row]) == beams and finished[row][-1][0] >= best_attainable
        beam_sums, beam_tokens = torch.tensor(next_sums, device=device), next_beam_tokens
        if all(done) or generated + 1 == max_new_tokens or stop():
            break
        chosen = torch.tensor(next_rows, device=device)
        cache.reorder_cache(chosen)
        attention_mask = attention_mask[chosen]  # each mask row follows its cache row
        attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
        out = language_model(input_ids=torch.tensor(next_tokens, device=device)[:, None],
                             attention_mask=attention_mask, past_key_values=cache, use_cache=True, logits_to_keep=1)
    for row in range(rows):
        if not done[row]:  # as 4.28's finalize: the running beams compete with the finished hypotheses
            for total, tokens in zip(beam_sums[row].tolist(), beam_tokens[row]):
                if total != -torch.inf:
                    _add_hypothesis(finished[row], tokens, total, 1 + len(tokens), beams)
    best = [finished[row][0][1] for row in range(rows)]
    token_ids = torch.full((rows, max(map(len, best), default=0)), pad_token_id, dtype=torch.long, device=device)
    for row, tokens in enumerate(best):
        token_ids[row, : len(tokens)] = torch.tensor(tokens, device=device)
    return token_ids


def _add_hypothesis(hypotheses: list, tokens: list[int], log_prob_sum: float, length: int, beams: int) -> None:
    """Keep the `beams` best hypotheses, best first, ranked by log_prob_sum / length (4.28's length: the input ids
    the hypothesis holds, the initial BOS and the tokens before the stop)."""
    hypotheses.append((log_prob_sum / length, tokens))
    hypotheses.sort(key=lambda h: -h[0])
    del hypotheses[beams:]
