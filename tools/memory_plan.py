"""python -m tools.memory_plan [--preset blip2-opt-2.7b] [--regions 32] [--max-new-tokens 20] [--beams 1]
                              [--prompt-tokens 0] [--kv-dtype fp16] [--weights-gib VARIANT=GIB ...]  ->  JSON

What a bundle needs in a GPU's memory while it describes a frame, from the model's sizes: the decode's KV cache as
runtime/device_kv.py preallocates it (two buffers per past/present tensor, front and back, each for the soft prompt
plus max_new_tokens positions, and the longest text prompt's tokens where regions have prompts, for regions x beams
rows) and the largest activations of each graph at that call
size. These are computed, not measured. The weights are what a bundle measured on disk (pass them with
--weights-gib, e.g. from README "Release size"); each variant's total is weights + KV cache + activations.
On a Jetson the CPU and GPU share one memory, so the OS, ROS and the CUDA context come on top (README, "On a Jetson").
"""
import json
import sys
from dataclasses import dataclass

from contract.cli import OneLineParser
from contract.generation import DEFAULT_MAX_NEW_TOKENS, MAX_PROMPT_TOKENS

PROG = "python -m tools.memory_plan"
DTYPE_BYTES = {"fp32": 4, "fp16": 2}
GIB = 1024 ** 3


@dataclass(frozen=True)
class CallSize:
    regions: int
    max_new_tokens: int
    beams: int
    kv_bytes_per_value: int
    prompt_tokens: int = 0  # the call's longest text prompt (runtime/prompts.py), 0 without prompts


def kv_cache_bytes(config, call: CallSize) -> int:
    """The device KV cache of one decode: front and back buffers of every layer's keys and values."""
    text = config.text_config()
    rows = call.regions * call.beams
    # the soft prompt, BOS, the longest text prompt and the tokens fed back
    positions = config.num_query_tokens + call.prompt_tokens + call.max_new_tokens
    per_buffer = rows * text.num_hidden_layers * 2 * text.hidden_size * positions * call.kv_bytes_per_value
    return 2 * per_buffer


def activation_bytes(config, call: CallSize) -> dict[str, int]:
    """The largest tensors alive at once in each graph at this call size (fp32 activations, the worst case): the
    ViT's MLP hidden and attention scores on one frame; the LLM prefill's FFN hidden and attention scores, and the
    (rows, vocabulary) logits."""
    vision, text = config.vision_config(), config.text_config()
    tokens = (config.image_size // vision.patch_size) ** 2 + 1
    rows = call.regions * call.beams
    prefill = config.num_query_tokens + 1 + call.prompt_tokens
    return {
        "vision": 4 * tokens * (vision.intermediate_size + vision.num_attention_heads * tokens),
        "llm_prefill": 4 * rows * prefill * (text.ffn_dim + text.num_attention_heads * prefill),
        "logits": 4 * rows * text.vocab_size,
    }


def plan(config, call: CallSize, weights_gib: dict[str, float]) -> dict:
    kv = kv_cache_bytes(config, call)
    activations = activation_bytes(config, call)
    peak_activations = max(activations["vision"], activations["llm_prefill"] + activations["logits"])
    working = kv + peak_activations
    return {
        "call": vars(call),
        "kv_cache_gib": kv / GIB,
        "activations_gib": {name: value / GIB for name, value in activations.items()},
        "peak_activations_gib": peak_activations / GIB,
        "variants": {name: {"weights_gib": gib, "total_gib": gib + working / GIB} for name, gib in weights_gib.items()},
    }


def weights_argument(text: str) -> tuple[str, float]:
    name, _, gib = text.partition("=")
    try:
        value = float(gib)
    except ValueError:
        value = -1.0
    if not name or value <= 0:
        raise ValueError(f"--weights-gib {text!r}: give VARIANT=GIB with a positive size, e.g. fp16=8.5")
    return name, value


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    parser.add_argument("--preset", default="blip2-opt-2.7b", help="model sizes (training/config.py PRESETS)")
    parser.add_argument("--regions", type=int, default=32, help="regions per frame (default 32)")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                        help=f"longest description (default {DEFAULT_MAX_NEW_TOKENS}, the node's)")
    parser.add_argument("--beams", type=int, default=1, help="beam search width (default 1, greedy)")
    parser.add_argument("--prompt-tokens", type=int, default=0,
                        help=f"the longest text prompt of a call, in tokens (default 0: no prompts; at most "
                             f"{MAX_PROMPT_TOKENS})")
    parser.add_argument("--kv-dtype", choices=DTYPE_BYTES, default="fp16",
                        help="KV cache precision: fp16 with fp16/int8/int4 engines (default), fp32 with fp32 ones")
    parser.add_argument("--weights-gib", nargs="*", default=[], metavar="VARIANT=GIB",
                        help="measured bundle sizes on disk, GiB")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        for name in ("regions", "max_new_tokens", "beams"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} is {getattr(args, name)}: it must be at least 1")
        if not 0 <= args.prompt_tokens <= MAX_PROMPT_TOKENS:
            parser.error(f"--prompt-tokens is {args.prompt_tokens}: a prompt has 0 to {MAX_PROMPT_TOKENS} tokens")
        weights = dict(weights_argument(text) for text in args.weights_gib)
        from training.config import RegionBLIPConfig

        config = RegionBLIPConfig.preset(args.preset)
    except ValueError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    call = CallSize(args.regions, args.max_new_tokens, args.beams, DTYPE_BYTES[args.kv_dtype], args.prompt_tokens)
    print(json.dumps({"preset": args.preset, **plan(config, call, weights)}, indent=2))
    return 0

if __name__ == "__main__":
    sys.exit(main())
