"""Checkpoint formats: our own directory, a transformers BLIP-2 directory, and the official RegionBLIP (LAVIS) state
dict. Nothing is ever unpickled: safetensors, or `torch.load(weights_only=True)` for .pth files."""

import json
import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_model
from torch import nn
from transformers import Blip2Config

from contract.modalities import IMAGE, IMAGE_REGION, POINTCLOUD, POINTCLOUD_REGION

from .config import RegionBLIPConfig

logger = logging.getLogger(__name__)
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
LAVIS_MODALITIES = {"img": IMAGE, "img_region": IMAGE_REGION, "pc": POINTCLOUD, "pc_region": POINTCLOUD_REGION}
# (pattern, replacement) applied in order to every LAVIS key; names as in transformers' BLIP-2 conversion script.
LAVIS_RENAMES = [
    (r"^visual_encoder\.cls_token$", "vision_model.embeddings.class_embedding"),
    (r"^visual_encoder\.pos_embed$", "vision_model.embeddings.position_embedding"),
    (r"^visual_encoder\.patch_embed\.proj\.", "vision_model.embeddings.patch_embedding."),
    (r"^visual_encoder\.blocks\.(\d+)\.norm([12])\.", r"vision_model.encoder.layers.\1.layer_norm\2."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"vision_model.encoder.layers.\1.self_attn.qkv."),
    (r"^visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"vision_model.encoder.layers.\1.self_attn.projection."),
    (r"^visual_encoder\.blocks\.(\d+)\.mlp\.", r"vision_model.encoder.layers.\1.mlp."),
    (r"^ln_vision\.", "vision_model.post_layernorm."),
    (r"^Qformer\.bert\.", "qformer."),
    (r"^Qformer_pc\.bert\.", "qformer_pc."),
    (r"^(qformer(_pc)?)\.embeddings\.LayerNorm\.", r"\1.layernorm."),
    (r"attention\.self\.", "attention.attention."),
    (r"^query_tokens_(\w+)$", lambda m: f"query_tokens.{_modality(m[1])}"),
    (r"^opt_proj_(\w+?)\.", lambda m: f"language_projection.{_modality(m[1])}."),
    (r"^img_region_posembed\.", "region_position_embedding.image_region."),
    (r"^pc_region_posembed\.", "region_position_embedding.pointcloud_region."),
    (r"^reg_img_region\.", "box_regression.image_region."),
    (r"^reg_pc_region\.", "box_regression.pointcloud_region."),
    (r"^pc_adapter\.", "point_adapter."),
    (r"^point_encoder\.blocks\.blocks\.", "point_encoder.blocks."),
    (r"^opt_model\.", "language_model."),
    (r"\.lora_([AB])_(\w+)$", lambda m: f".lora_{m[1]}.{_modality(m[2])}.weight"),
]
# Text-side parts of the release (ITC / ITM / Q-Former ITG) that this model does not have; they are skipped.
LAVIS_NOT_MODELED = re.compile(
    r"^(stage1_proj_\w+\.|img_itm_head\.|temp$|Qformer(_pc)?\.cls\."
    r"|Qformer(_pc)?\.bert\.embeddings\.(word_embeddings|position_embeddings|position_ids)"
    r"|Qformer(_pc)?\.bert\.encoder\.layer\.\d+\.(intermediate|output)\.)"
)
LAVIS_KNOWN = re.compile(r"^(visual_encoder\.|ln_vision\.|Qformer(_pc)?\.bert\.|query_tokens_|opt_proj_"
                         r"|(img|pc)_region_posembed\.|reg_(img|pc)_region\.|pc_adapter\.|point_encoder\.|opt_model\.)")


def _modality(lavis_name: str) -> str:
    if lavis_name not in LAVIS_MODALITIES:
        raise ValueError(f"unknown LAVIS modality suffix {lavis_name!r}: expected one of {list(LAVIS_MODALITIES)}")
    return LAVIS_MODALITIES[lavis_name]


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


def is_blip2_weight(key: str) -> bool:
    """Our weights that a BLIP-2 checkpoint provides (the image path, adapters excluded)."""
    parts = ("vision_model.", "qformer.", "language_projection.image.", "language_model.")
    return key == "query_tokens.image" or key.startswith(parts) and ".lora_" not in key


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
    # The release's point Q-Former init is unknown; starting it from the trained image Q-Former keeps its
    # cross-attention meaningful for the adapted point features.
    state |= {"qformer_pc." + k.removeprefix("qformer."): v for k, v in state.items() if k.startswith("qformer.")}
    missing = _load_partial(model, _lora_base_names(state, model), str(directory))
    blip2_missing = [k for k in missing if is_blip2_weight(k)]
    if blip2_missing:
        raise ValueError(f"{directory} lacks BLIP-2 weights {blip2_missing[:5]}: is it a complete checkpoint?")


# ---- official RegionBLIP (LAVIS) --------------------------------------------------------------------------------

def _read_lavis(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state)  # LAVIS checkpoints wrap the weights with optimizer state


def lavis_to_regionblip(state: dict, model: nn.Module) -> tuple[dict, list[str]]:
    """Rename an official state dict to ours. Returns the renamed weights and the keys skipped as not modeled."""
    state, renamed, skipped, unknown = dict(state), {}, [], []
    for key in [k for k in state if k.endswith(".attn.q_bias")]:  # EVA keeps q/v biases apart; k has none
        q_bias, v_bias = state.pop(key), state.pop(key.replace("q_bias", "v_bias"))
        state[key.replace("q_bias", "qkv.bias")] = torch.cat([q_bias, torch.zeros_like(v_bias), v_bias])
    ours = model.state_dict().keys()
    for key, tensor in state.items():
        if LAVIS_NOT_MODELED.match(key):
            skipped.append(key)
            continue
        if not LAVIS_KNOWN.match(key):
            unknown.append(key)
            continue
        new = key
        for pattern, replacement in LAVIS_RENAMES:
            new = re.sub(pattern, replacement, new)
        if ".lora_" in new and new not in ours:
            if key.endswith(".lora_B_img") and tensor.abs().max() > 0:
                raise ValueError(f"{key} is nonzero: the image modality must be plain BLIP-2 (its LoRA B stays 0)")
            skipped.append(key)  # adapters the released forward never activates (e.g. image, pc LoRA in Qformer)
        else:
            renamed[new] = tensor
    if unknown:
        raise ValueError(f"{len(unknown)} keys of the official checkpoint cannot be mapped, e.g. {unknown[:5]}: "
                         "this converter knows visual_encoder, ln_vision, Qformer(_pc), query_tokens_*, opt_proj_*, "
                         "*_posembed, reg_*, pc_adapter, point_encoder and opt_model")
    return _lora_base_names(renamed, model), skipped


def load_point_bert_weights(model: nn.Module, path: str | Path) -> None:
    """Point-BERT's pretrained checkpoint as ULIP and RegionBLIP load it: `base_model`, keys under `transformer_q.`."""
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if "base_model" not in stored:
        raise ValueError(f"{path} has no 'base_model' entry: expected Point-BERT's pretrained checkpoint "
                         "(point_bert_pretrained.pt)")
    ours = model.state_dict().keys()
    state = {}
    for key, tensor in stored["base_model"].items():
        key = key.removeprefix("module.")
        if key.startswith("transformer_q."):
            key = "point_encoder." + key.removeprefix("transformer_q.").replace("blocks.blocks.", "blocks.")
            if key in ours:  # heads of the pre-training task have no place here
                state[key] = tensor
    missing = [k for k in _load_partial(model, state, str(path)) if k.startswith("point_encoder.")]
    if missing:
        raise ValueError(f"{path} lacks Point-BERT weights {missing[:5]}: check the point_* sizes of the config")


def load_lavis_weights(model: nn.Module, path: str | Path, blip2_given: bool, point_bert_given: bool) -> None:
    state, skipped = lavis_to_regionblip(_read_lavis(Path(path)), model)
    missing = _load_partial(model, state, str(path))
    if skipped:
        logger.info("%s: skipped %d weights not modeled here (ITC/ITM/ITG text side, unused adapters)", path,
                    len(skipped))
    uncovered = [k for k in missing if not (blip2_given and is_blip2_weight(k))
                 and not (point_bert_given and k.startswith("point_encoder."))]
    if uncovered:
        raise ValueError(f"{path} lacks {len(uncovered)} weights, e.g. {uncovered[:5]}: LAVIS saves only trained "
                         "weights; take the frozen ones from blip2=<a BLIP-2 OPT directory> (ViT, image Q-Former, "
                         "OPT) and point_bert=<point_bert_pretrained.pt> (Point-BERT)")
