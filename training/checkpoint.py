"""Checkpoint formats: our own directory, a transformers BLIP-2 directory, and a BERT directory for the Q-Former's
text side (the release's LAVIS state dicts: checkpoint_lavis.py). Nothing is ever unpickled: safetensors only here.
"""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_model
from torch import nn
from transformers import Blip2Config

from .config import RegionBLIPConfig
from .qformer_text import QFORMERS

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


# ---- our own directory ------------------------------------------------------------------------------------------

def save(model: nn.Module, config: RegionBLIPConfig, directory: str | Path, tokenizer=None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save(directory / CONFIG_NAME)
    save_model(model, str(directory / WEIGHTS_NAME))  # handles OPT's tied embedding / lm_head
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def load_weights(model: nn.Module, path: Path) -> None:
    if not path.exists():
        raise ValueError(f"{path} not found: a RegionBLIP checkpoint directory holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except RuntimeError as error:  # a shape mismatch
        raise ValueError(f"{path} does not match its config.json: {error}") from error
    if missing or unexpected:
        raise ValueError(f"{path} does not match its config.json: missing {sorted(missing)[:5]}, unexpected "
                         f"{sorted(unexpected)[:5]}; save config and weights together with save_pretrained")


# ---- shared helpers ---------------------------------------------------------------------------------------------

def _lora_base_names(state: dict, model: nn.Module) -> dict:
    """peft wraps the adapted Linears: `x.query.weight` lives at `x.query.base_layer.weight`."""
    ours = model.state_dict().keys()
    renamed = {}
    for key, tensor in state.items():
        if key not in ours and "." in key:
            module, param = key.rsplit(".", 1)
            if f"{module}.base_layer.{param}" in ours:
                key = f"{module}.base_layer.{param}"
        renamed[key] = tensor
    return renamed


def _load_partial(model: nn.Module, state: dict, source: str) -> list[str]:
    """Load `state`; unexpected keys are an error. Returns the missing keys (tied copies of loaded ones excluded)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{source}: {len(unexpected)} weights have no place in this model, e.g. {unexpected[:5]}: "
                         "check that the config matches the checkpoint")
    ours = model.state_dict()
    loaded = {ours[k].data_ptr() for k in state}
    return [k for k in missing if ours[k].data_ptr() not in loaded]


def _read_safetensors_dir(directory: Path) -> dict:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / WEIGHTS_NAME).exists():
        files = [WEIGHTS_NAME]
    else:
        raise ValueError(f"{directory} has no {WEIGHTS_NAME} or model.safetensors.index.json: convert its weights "
                         "to safetensors first (pickled .bin files are never loaded)")
    state = {}
    for name in files:
        state.update(load_file(directory / name))
    return state


def point_qformer_from_image(state: dict) -> dict:
    """The release starts the point Q-Former from bert-base-uncased (cross-attention random); starting it from the
    trained image Q-Former instead keeps its cross-attention meaningful for the adapted point features."""
    return {"qformer_pc." + k.removeprefix("qformer."): v for k, v in state.items() if k.startswith("qformer.")}


# ---- transformers BLIP-2 ----------------------------------------------------------------------------------------

def _sub_config_kwargs(sub_config) -> dict:
    kwargs = sub_config.to_diff_dict()
    for key in ("transformers_version", "model_type", "architectures", "_name_or_path", "dtype", "torch_dtype"):
        kwargs.pop(key, None)
    return kwargs


def blip2_config(directory: str | Path, **overrides) -> RegionBLIPConfig:
    """RegionBLIP config from a BLIP-2 directory's config.json; `overrides` set the RegionBLIP-only fields."""
    blip2 = Blip2Config.from_pretrained(str(directory))
    if blip2.text_config.model_type != "opt":
        raise ValueError(f"{directory} has a {blip2.text_config.model_type} language model: RegionBLIP here is built "
                         "on OPT (blip2-opt-* checkpoints)")
    values = dict(vision=_sub_config_kwargs(blip2.vision_config), qformer=_sub_config_kwargs(blip2.qformer_config),
                  text=_sub_config_kwargs(blip2.text_config), num_query_tokens=blip2.num_query_tokens)
    return RegionBLIPConfig(**{**values, **overrides})


# The text FFN of a Q-Former layer (beside the queries' `intermediate_query`/`output_query`): BLIP-2 OPT checkpoints
# drop it with the rest of the text side, which comes from BERT (load_bert_text_weights).
TEXT_FFN = re.compile(r"^qformer(_pc)?\.encoder\.layer\.\d+\.(intermediate|output)\.")


def is_text_side_weight(key: str) -> bool:
    """Our Q-Former text-side weights (RegionBLIPConfig.qformer_text) that BERT provides."""
    return key.startswith(tuple(f"qformer_text.text.{name}." for name in QFORMERS)) or bool(TEXT_FFN.match(key))


def is_blip2_weight(key: str) -> bool:
    """Our weights that a BLIP-2 OPT checkpoint provides (the image path; adapters and the text side excluded)."""
    parts = ("vision_model.", "qformer.", "language_projection.image.", "language_model.")
    return (key == "query_tokens.image" or key.startswith(parts)) and ".lora_" not in key \
        and not is_text_side_weight(key)


def load_blip2_weights(model: nn.Module, directory: str | Path) -> None:
    state = {}
    for key, tensor in _read_safetensors_dir(Path(directory)).items():
        if key == "query_tokens":
            key = "query_tokens.image"
        elif key.startswith("language_projection."):
            key = "language_projection.image." + key.removeprefix("language_projection.")
        elif not key.startswith(("vision_model.", "qformer.", "language_model.")):
            raise ValueError(f"{directory}: weight {key!r} is not part of a BLIP-2 OPT model")
        state[key] = tensor
    state |= point_qformer_from_image(state)
    missing = _load_partial(model, _lora_base_names(state, model), str(directory))
    blip2_missing = [k for k in missing if is_blip2_weight(k)]
    if blip2_missing:
        raise ValueError(f"{directory} lacks BLIP-2 weights {blip2_missing[:5]}: is it a complete checkpoint?")


# ---- BERT (the Q-Former's text side) ----------------------------------------------------------------------------

BERT_TEXT_RENAMES = [
    (r"^bert\.embeddings\.((word|position)_embeddings\.)", r"qformer_text.text.{q}.embeddings.\1"),
    (r"^bert\.encoder\.layer\.(\d+)\.(intermediate|output)\.", r"{q}.encoder.layer.\1.\2."),
    (r"^cls\.predictions\.(transform\.|bias$)", r"qformer_text.text.{q}.predictions.\1"),
]
VOCAB_ROWS = ("embeddings.word_embeddings.weight", "predictions.bias")


def load_bert_text_weights(model: nn.Module, directory: str | Path) -> None:
    """Both Q-Formers' text side from a BERT directory (bert-base-uncased's model.safetensors), as the release starts
    its Q-Formers from BERT: word and position embeddings, each layer's text FFN, the LM head. Rows past BERT's
    vocabulary ([DEC], added by the release) keep their init. Everything else of BERT has no place here."""
    if not getattr(model.config, "qformer_text", False):
        raise ValueError("this model has no Q-Former text side to load BERT into: build it with qformer_text=True")
    ours = model.state_dict()
    state = {}
    for key, tensor in _read_safetensors_dir(Path(directory)).items():
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))
        for pattern, replacement in BERT_TEXT_RENAMES:
            if not re.match(pattern, key):
                continue
            for qformer in QFORMERS:
                new = re.sub(pattern, replacement.replace("{q}", qformer), key)
                if new.endswith(VOCAB_ROWS) and tensor.shape[1:] == ours[new].shape[1:]:
                    if tensor.shape[0] > ours[new].shape[0]:
                        raise ValueError(f"{directory}: {key} has {tensor.shape[0]} rows, more than this model's "
                                         f"qformer_text_vocab_size {ours[new].shape[0]}: raise it to cover BERT's")
                    tensor = torch.cat([tensor, ours[new][tensor.shape[0]:]])
                state[new] = tensor
    try:
        missing = _load_partial(model, state, str(directory))
    except RuntimeError as error:  # a shape mismatch
        raise ValueError(f"{directory} does not fit the Q-Former's sizes (hidden, intermediate, positions): {error}")
    absent = [k for k in missing if is_text_side_weight(k)]
    if absent:
        raise ValueError(f"{directory} lacks BERT weights {absent[:5]}: is it a BERT (bert-base-uncased) directory?")
