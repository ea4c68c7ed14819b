"""How descriptions are decoded: the settings every backend takes, and the named sets of defaults.

A bundle records its GenerationSettings in its manifest; the runtime starts from them and callers may change the
decoding fields (Describer.configure). The token ids come from the model's config, never from here.
"""
from dataclasses import dataclass

# What a bundle decodes with unless its exporter says otherwise: greedy, at most 30 new tokens.
DEFAULT_MAX_NEW_TOKENS = 30
DEFAULT_MIN_NEW_TOKENS = 0
DEFAULT_NUM_BEAMS = 1

# A region's text prompt (Region2D.prompt), placed after the soft prompt and BOS as BLIP-2 places one: at most this
# many tokens. It bounds the llm graph's TensorRT profile (export/trt_profiles.py) and so the prompts a bundle takes.
MAX_PROMPT_TOKENS = 32


def prompt_token_limit(num_query_tokens: int, max_positions: int, max_new_tokens: int) -> int:
    """The most tokens a text prompt may have: MAX_PROMPT_TOKENS, or fewer where the soft prompt, BOS, the prompt
    and the new tokens would not fit the model's positions."""
    return max(0, min(MAX_PROMPT_TOKENS, max_positions - num_query_tokens - 1 - max_new_tokens))


@dataclass(frozen=True)
class Decoding:
    """The decoding choices, without token ids: what a user picks."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_new_tokens: int = DEFAULT_MIN_NEW_TOKENS
    num_beams: int = DEFAULT_NUM_BEAMS


# The released RegionBLIP evaluation: beam 5, max_length=30, min_length=8 under transformers 4.28. Generating from
# embeddings, 4.28 starts from one BOS input id and both lengths count it: at most 29 new tokens, and the stop token
# banned until 7 exist. (Its beam search counts that BOS in a hypothesis's length too: our beam search does likewise.)
RELEASE_EVALUATION = Decoding(max_new_tokens=29, min_new_tokens=7, num_beams=5)
# Our evaluation on synthetic scenes: captions there can be a single short word, and whole-image lists run long.
SYNTHETIC_EVALUATION = Decoding(max_new_tokens=40, min_new_tokens=1, num_beams=5)


@dataclass(frozen=True)
class GenerationSettings:
    bos_token_id: int
    eos_token_id: int  # the stop token ("\n")
    pad_token_id: int
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_new_tokens: int = DEFAULT_MIN_NEW_TOKENS
    num_beams: int = DEFAULT_NUM_BEAMS

    def __post_init__(self):
        if not 0 <= self.min_new_tokens <= self.max_new_tokens or self.max_new_tokens < 1:
            raise ValueError(f"need 0 <= min_new_tokens <= max_new_tokens and max_new_tokens >= 1, got "
                             f"{self.min_new_tokens} and {self.max_new_tokens}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams is {self.num_beams}: use 1 for greedy decoding or more for beam search")
