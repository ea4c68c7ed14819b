"""Record what released RegionBLIP's caption decoding chooses, on a tiny random OPT, as a test fixture.

Released RegionBLIP (mightyzau/RegionBLIP, lavis/models/regionblip_models/RegionBLIP_opt.py, generate) decodes with
transformers 4.28:

    opt_model.generate(inputs_embeds=[soft prompt; BOS embedding], attention_mask=ones, do_sample=False, top_p=0.9,
                       temperature=1, num_beams=5, max_length=30, min_length=8, eos_token_id=50118 ("\\n"),
                       repetition_penalty=1.0, length_penalty=1.0, num_return_sequences=1)

Generating from embeddings, 4.28 starts from one initialised BOS input id, so max_length and min_length count it, and
so does beam search's length normalisation. This tool makes that call, and the same call greedy, on a tiny OPT with
random weights and 8 random soft prompts, and writes the model, the prompts and the chosen token ids under
tests/data/upstream_generation/, where tests/test_upstream_generation.py checks our decoders against them.

It needs transformers 4.28, which the project's venv does not have; the fixture was recorded with Python 3.11.7,
torch 2.13.0+cpu, transformers 4.28.1, safetensors 0.8.0, numpy 2.4.6:

    python3.11 -m venv /tmp/hf428
    /tmp/hf428/bin/pip install torch==2.13.0          # the CPU wheel, as tools/setup_venv.sh installs it
    /tmp/hf428/bin/pip install transformers==4.28.1 safetensors numpy
    OMP_NUM_THREADS=1 /tmp/hf428/bin/python tools/upstream_generation_fixture.py

The run is deterministic: rerunning it rewrites the same files.
"""
import argparse
import json
import platform
from pathlib import Path

import safetensors
import torch
import transformers
from safetensors.torch import save_file
from transformers import OPTConfig, OPTForCausalLM

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "upstream_generation"
# Every field the two transformers versions read, written out so that both build the same network.
CONFIG = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
              max_position_embeddings=64, word_embed_proj_dim=32, do_layer_norm_before=True, dropout=0.0,
              attention_dropout=0.0, activation_function="relu", layerdrop=0.0, enable_bias=True,
              layer_norm_elementwise_affine=True, tie_word_embeddings=True, bos_token_id=2, eos_token_id=2,
              pad_token_id=1)
# Stands for "\n" (50118): not the config's eos, as in OPT, and a token this random model often ranks high, so
# that rows stop at many lengths, some never, and beam search weighs stopped hypotheses against running ones.
STOP = 18
ROWS, QUERIES = 8, 4
WEIGHT_STD = 0.3  # far above OPT's init_std (0.02), so that the distributions are peaked and the stop token competes
# Exactly the keyword arguments of RegionBLIP_opt.generate's call, eos standing in for 50118.
UPSTREAM_CALL = dict(do_sample=False, top_p=0.9, temperature=1, num_beams=5, max_length=30, min_length=8,
                     eos_token_id=STOP, repetition_penalty=1.0, length_penalty=1.0, num_return_sequences=1)


def build_model(seed: int) -> OPTForCausalLM:
    model = OPTForCausalLM(OPTConfig(**CONFIG)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # tied lm_head is embed_tokens: listed once
            if "layer_norm" in name:
                continue  # keep LayerNorms at identity, as a trained model's are near it
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * WEIGHT_STD)
    return model


@torch.no_grad()
def record(model: OPTForCausalLM, prompts: torch.Tensor, num_beams: int) -> list[list[int]]:
    """The token ids generate returns, BOS first, as RegionBLIP_opt.generate gets them."""
    bos = torch.full((len(prompts), 1), model.config.bos_token_id, dtype=torch.long)
    inputs_embeds = torch.cat([prompts, model.get_input_embeddings()(bos)], dim=1)  # (R, Q + 1, D)
    attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long)
    out = model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         **{**UPSTREAM_CALL, "num_beams": num_beams})
    return out.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not transformers.__version__.startswith("4.28."):
        raise SystemExit(f"this records transformers 4.28's decoding, but transformers {transformers.__version__} "
                         f"is installed: run it in a 4.28 venv (see this file's docstring)")
    model = build_model(args.seed)
    prompts = torch.randn(ROWS, QUERIES, CONFIG["hidden_size"], generator=torch.Generator().manual_seed(args.seed + 1))
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items() if name != "lm_head.weight"}
    save_file(weights, args.out / "model.safetensors")
    save_file({"prompts": prompts.contiguous()}, args.out / "prompts.safetensors")
    fixture = dict(
        recorded_with=dict(python=platform.python_version(), torch=torch.__version__,
                           transformers=transformers.__version__, safetensors=safetensors.__version__),
        seed=args.seed, config=CONFIG, stop_token_id=STOP, upstream_call=UPSTREAM_CALL,
        # Rows as generate returns them: the initialised BOS, the new tokens, the stop token, then padding.
        beam_sequences=record(model, prompts, UPSTREAM_CALL["num_beams"]),
        greedy_sequences=record(model, prompts, 1),
    )
    (args.out / "fixture.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
