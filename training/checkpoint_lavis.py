"""The release's own formats: a LAVIS state dict, of RegionBLIP (names with `_img`-style suffixes) or of a plain BLIP-2
OPT (blip2_opt.py: `query_tokens`, `opt_proj`, no text side), and Point-BERT's pretrained checkpoint. Nothing is
ever unpickled: safetensors, or `torch.load(weights_only=True)` for .pth files."""

import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from contract.modalities import IMAGE, IMAGE_REGION, POINTCLOUD, POINTCLOUD_REGION

from .checkpoint import (TEXT_FFN, _load_partial, _lora_base_names, is_blip2_weight, is_text_side_weight,
                         point_qformer_from_image)

logger = logging.getLogger(__name__)
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
    # the Q-Former's text side (training/qformer_text.py), before the Q-Former's own renames
    (r"^Qformer(_pc)?\.bert\.embeddings\.((word|position)_embeddings\.)",
     lambda m: f"qformer_text.text.qformer{m[1] or ''}.embeddings.{m[2]}"),
    (r"^Qformer(_pc)?\.cls\.predictions\.", lambda m: f"qformer_text.text.qformer{m[1] or ''}.predictions."),
    (r"^stage1_proj_text\.", "qformer_text.text_projection."),
    (r"^stage1_proj_(\w+?)\.", lambda m: f"qformer_text.vision_projection.{_modality(m[1])}."),
    (r"^temp$", "qformer_text.temp"),
    (r"^Qformer\.bert\.", "qformer."),
    (r"^Qformer_pc\.bert\.", "qformer_pc."),
    (r"^(qformer(_pc)?)\.embeddings\.LayerNorm\.", r"\1.layernorm."),
    (r"attention\.self\.", "attention.attention."),
    (r"^query_tokens$", "query_tokens.image"),  # plain BLIP-2
    (r"^query_tokens_(\w+)$", lambda m: f"query_tokens.{_modality(m[1])}"),
    (r"^opt_proj\.", "language_projection.image."),  # plain BLIP-2
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
# Never modeled: ITM's head (ITM is not trained here), BERT's position-id buffer, and the LM head's decoder, which
# BERT ties to the word embeddings (the tie is checked).
LAVIS_NEVER_MODELED = re.compile(r"^(img_itm_head\.|Qformer(_pc)?\.bert\.embeddings\.position_ids$"
                                 r"|Qformer(_pc)?\.cls\.predictions\.decoder\.)")
LAVIS_KNOWN = re.compile(r"^(visual_encoder\.|ln_vision\.|Qformer(_pc)?\.(bert|cls)\.|query_tokens|opt_proj"
                         r"|(img|pc)_region_posembed\.|reg_(img|pc)_region\.|pc_adapter\.|point_encoder\.|opt_model\."
                         r"|stage1_proj_\w+\.|temp$)")


def _modality(lavis_name: str) -> str:
    if lavis_name not in LAVIS_MODALITIES:
        raise ValueError(f"unknown LAVIS modality suffix {lavis_name!r}: expected one of {list(LAVIS_MODALITIES)}")
    return LAVIS_MODALITIES[lavis_name]


def is_plain_blip2(state: dict) -> bool:
    """A blip2_opt.py state dict (one modality, no suffixes) rather than RegionBLIP's; refuses a mix of both."""
    plain = "query_tokens" in state or any(k.startswith("opt_proj.") for k in state)
    suffixed = any(re.match(r"^(query_tokens_|opt_proj_|Qformer_pc\.)", k) for k in state)
    if plain and suffixed:
        raise ValueError("the state dict mixes plain BLIP-2 names (query_tokens, opt_proj) with RegionBLIP's "
                         "(query_tokens_img, opt_proj_img, Qformer_pc): it must be one model's state dict")
    return plain


def _check_tied_decoder(state: dict) -> None:
    for key in [k for k in state if k.endswith("cls.predictions.decoder.weight")]:
        words = state.get(key.replace("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"))
        if words is not None and not torch.equal(words, state[key]):
            raise ValueError(f"{key} differs from the word embeddings: this model ties BERT's LM head to them, so "
                             "it cannot hold an untied one")


def _is_optional(key: str) -> bool:
    """Our names of parts a model may lack: adapters the released forward never runs (e.g. the image LoRA), and the
    Q-Former text side of a model built without it (RegionBLIPConfig.qformer_text)."""
    return ".lora_" in key or key.startswith("qformer_text.") or bool(TEXT_FFN.match(key))


def _read_lavis(path: Path) -> dict:
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state)  # LAVIS checkpoints wrap the weights with optimizer state


def lavis_to_regionblip(state: dict, model: nn.Module) -> tuple[dict, list[str]]:
    """Rename an official state dict to ours. Returns the renamed weights and the keys skipped as not modeled. A plain
    BLIP-2 dict also starts the point Q-Former as a copy of its Q-Former (as from_blip2 does)."""
    plain = is_plain_blip2(state)
    _check_tied_decoder(state)
    state, renamed, skipped, unknown = dict(state), {}, [], []
    for key in [k for k in state if k.endswith(".attn.q_bias")]:  # EVA keeps q/v biases apart; k has none
        q_bias, v_bias = state.pop(key), state.pop(key.replace("q_bias", "v_bias"))
        state[key.replace("q_bias", "qkv.bias")] = torch.cat([q_bias, torch.zeros_like(v_bias), v_bias])
    ours = model.state_dict().keys()
    for key, tensor in state.items():
        if LAVIS_NEVER_MODELED.match(key):
            skipped.append(key)
            continue
        if not LAVIS_KNOWN.match(key):
            unknown.append(key)
            continue
        new = key
        for pattern, replacement in LAVIS_RENAMES:
            new = re.sub(pattern, replacement, new)
        if new not in ours and _is_optional(new):
            if key.endswith(".lora_B_img") and tensor.abs().max() > 0:
                raise ValueError(f"{key} is nonzero: the image modality must be plain BLIP-2 (its LoRA B stays 0)")
            skipped.append(key)
        else:
            renamed[new] = tensor
    if unknown:
        raise ValueError(f"{len(unknown)} keys of the official checkpoint cannot be mapped, e.g. {unknown[:5]}: "
                         "this converter knows visual_encoder, ln_vision, Qformer(_pc), query_tokens(_*), "
                         "opt_proj(_*), stage1_proj_*, temp, *_posembed, reg_*, pc_adapter, point_encoder and "
                         "opt_model")
    if plain:
        renamed |= point_qformer_from_image(renamed)
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


def load_lavis_weights(model: nn.Module, path: str | Path, *, blip2_given: bool, point_bert_given: bool,
                       bert_given: bool = False) -> list[str]:
    """Load a LAVIS state dict over `model`; returns the skipped keys. What the dict lacks must have come from the
    other sources given (blip2=, point_bert=, bert=); a plain BLIP-2 dict leaves the RegionBLIP parts fresh."""
    state = _read_lavis(Path(path))
    plain = is_plain_blip2(state)
    renamed, skipped = lavis_to_regionblip(state, model)
    missing = _load_partial(model, renamed, str(path))
    if skipped:
        logger.info("%s: skipped %d weights not modeled here (ITM head, unused adapters%s)", path, len(skipped),
                    "" if getattr(model.config, "qformer_text", False) else ", the Q-Former text side of ITC/ITG")
    uncovered = [k for k in missing if not (blip2_given and is_blip2_weight(k) or plain and not is_blip2_weight(k)
                                            or point_bert_given and k.startswith("point_encoder.")
                                            or bert_given and is_text_side_weight(k))]
    if uncovered:
        raise ValueError(f"{path} lacks {len(uncovered)} weights, e.g. {uncovered[:5]}: LAVIS saves only trained "
                         "weights; take the frozen ones from blip2=<a BLIP-2 OPT directory> (ViT, image Q-Former, "
                         "OPT), point_bert=<point_bert_pretrained.pt> (Point-BERT) and, for a model with the "
                         "Q-Former text side, bert=<a bert-base-uncased directory> (the image Q-Former's)")
    return skipped
