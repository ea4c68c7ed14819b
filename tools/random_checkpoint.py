"""python -m tools.random_checkpoint --preset blip2-opt-2.7b --out DIR

A RegionBLIP checkpoint with random weights at a preset's sizes, and a word-level tokenizer of its vocabulary:
what the benchmarks export and describe, since no model hub is reachable here. Speed and memory do not depend on
the weights' values. The LoRA B matrices are drawn too (peft starts them at zero), so that merging and stacking the
adapters is real work in the exported graphs.
"""
import argparse
import resource
import sys
import time
from pathlib import Path

from contract.cli import OneLineParser


def write_random_checkpoint(preset: str, directory: Path, seed: int = 0) -> None:
    import torch
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from training.config import RegionBLIPConfig
    from training.modeling_regionblip import RegionBLIP

    torch.manual_seed(seed)
    config = RegionBLIPConfig.preset(preset)
    model = RegionBLIP(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    vocab = {f"w{i}": i for i in range(config.text_config().vocab_size)}
    vocab.update({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                        bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    model.save_pretrained(directory, tokenizer=tokenizer)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m tools.random_checkpoint", description=__doc__.splitlines()[2])
    parser.add_argument("--preset", required=True, help="model size preset (training/config.py PRESETS)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    parser.add_argument("--seed", type=int, default=0)
    try:
        args = parser.parse_args(argv)
        from training.config import PRESETS

        if args.preset not in PRESETS:
            parser.error(f"unknown preset {args.preset!r}: choose one of {', '.join(sorted(PRESETS))}")
    except ValueError as error:
        print(f"python -m tools.random_checkpoint: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    write_random_checkpoint(args.preset, args.out, args.seed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"checkpoint written to {args.out} in {time.perf_counter() - start:.0f} s (peak RSS {peak:.1f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
