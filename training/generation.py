"""Caption decoding from a soft prompt: OPT generate (greedy or beam), then a scoring pass for mean log-probs."""

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
) -> Generated:
    """Decode from `prompt` (R, Q, D) soft tokens followed by BOS, as BLIP-2/RegionBLIP inference does. `stop`,
    asked after every step, ends generation early when it says True (the caller decides what that means)."""
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"need 0 <= min_new_tokens <= max_new_tokens, got {min_new_tokens} and {max_new_tokens}")
    config = language_model.config
    embed = language_model.get_input_embeddings()
    bos = torch.full((prompt.shape[0], 1), config.bos_token_id, dtype=torch.long, device=prompt.device)
    inputs_embeds = torch.cat([prompt, embed(bos)], dim=1)  # (R, Q + 1, D)
    attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=prompt.device)
    token_ids = language_model.generate(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=False,
        stopping_criteria=StoppingCriteriaList([_Stop(stop)]) if stop is not None else None,
    )  # (R, T)
    # Re-score the chosen tokens with the model's own (unprocessed) distribution: one pass, same for greedy and beam.
    valid = tokens_before_stop(token_ids, eos_token_id)
    logits = language_model(
        inputs_embeds=torch.cat([inputs_embeds, embed(token_ids)], dim=1),
        attention_mask=torch.cat([attention_mask, valid.long()], dim=1),
    ).logits[:, inputs_embeds.shape[1] - 1 : -1]  # (R, T, V): position t predicts token t
    log_probs = logits.float().log_softmax(-1).gather(-1, token_ids[..., None]).squeeze(-1)  # (R, T)
    scores = (log_probs * valid).sum(1) / valid.sum(1).clamp(min=1)
    return Generated(token_ids=token_ids, scores=scores)
