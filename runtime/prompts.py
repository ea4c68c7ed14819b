"""Text prompts of regions: checking and tokenizing them, and the llm graph's input for rows padded to one length.

A region's prompt (Region2D.prompt, e.g. "Question: what colour is it? Answer:") goes after the soft prompt and BOS,
where BLIP-2 places a text prompt; "" is none, and a call without any prompt decodes exactly as before prompts
existed. The description is what the model generates after the prompt, not the prompt itself.
"""
import numpy as np

from contract.generation import MAX_PROMPT_TOKENS


def check_prompts(prompts, count: int) -> list[str] | None:
    """`prompts` (None, or a sequence of one str per region or image, "" for none) as a list, or None where no row
    has one. ValueError, saying what to give, for anything else."""
    if prompts is None:
        return None
    if isinstance(prompts, (str, bytes)):
        raise ValueError(f"prompts is one string ({prompts!r}): give a sequence of strings, one per region "
                         f"(e.g. [prompt] * {count}), or prompts=None")
    try:
        prompts = list(prompts)
    except TypeError:
        raise ValueError(f"prompts is {type(prompts).__name__} {prompts!r}, not a sequence: give a sequence of "
                         "strings, one per region, or prompts=None") from None
    if len(prompts) != count:
        raise ValueError(f"{len(prompts)} prompts for {count} regions: give one per region (\"\" for none), or "
                         "prompts=None")
    for row, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ValueError(f"prompt {row} is {type(prompt).__name__} {prompt!r}, not a str: give each region's "
                             "prompt as a str, \"\" for none")
    return prompts if any(prompts) else None


def encode_prompt(tokenizer, prompt: str, limit: int) -> tuple[int, ...]:
    """The prompt's token ids, BOS not included: the decoder puts BOS before them, so the tokenizer's post-processor
    (which prepends BOS to every encoding, as OPT's does) is skipped. ValueError when there are more than `limit`
    (contract/generation.py's prompt_token_limit)."""
    ids = tuple(tokenizer.encode(prompt, add_special_tokens=False).ids)
    if len(ids) > limit:
        if limit == MAX_PROMPT_TOKENS:
            why, fix = f"the {MAX_PROMPT_TOKENS} a prompt may have", "shorten it"
        else:
            why = f"the {limit} that fit the model's positions beside the soft prompt, BOS and max_new_tokens"
            fix = "shorten it or lower max_new_tokens"
        raise ValueError(f"prompt {prompt!r} has {len(ids)} tokens, more than {why}: {fix}")
    return ids


def no_padding(rows: int) -> np.ndarray:
    """The llm graph's padding input (export/llm.py) for rows without any: an empty range each."""
    return np.zeros((rows, 2), np.int64)


def cannot_pad(path) -> str:
    """Why a bundle whose llm graph lacks the padding input refuses text prompts, and what to do."""
    return (f"bundle {path}'s llm graph has no padding input, so it cannot take text prompts (it was exported before "
            "them): describe without prompts, or re-export the bundle with python -m export.onnx")
