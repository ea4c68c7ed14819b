"""A tiny random RegionBLIP checkpoint with the default tokenizer, for export and runtime tests.

LoRA B matrices are random (a trained adapter is never zero), so each modality's adapter changes
its outputs and a wrong merge or a wrong adapter id shows up as a wrong number.
"""
from functools import lru_cache
from pathlib import Path

import torch

from training.config import RegionBLIPConfig
from training.modeling_regionblip import RegionBLIP
from training.tokenizer import default_tokenizer, newline_token_id


@lru_cache(maxsize=1)
def _tokenizer():
    return default_tokenizer()


def tiny_config() -> RegionBLIPConfig:
    tokenizer = _tokenizer()
    config = RegionBLIPConfig.preset("tiny")
    config.text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config.newline_token_id = newline_token_id(tokenizer)
    config.object_num_points, config.scene_num_points = 200, 300
    config.region_feature_mask = True  # as the embedded default: the exported graphs must carry both
    config.point_region_crop = 48
    return config


def write_tiny_checkpoint(directory: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = RegionBLIP(tiny_config()).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name or name == "region_feature_embedding":  # zero at init: make them count
                parameter.normal_(std=0.3)
    model.save_pretrained(directory, tokenizer=_tokenizer())
    return Path(directory)
