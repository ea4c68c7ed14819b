"""Per-modality LoRA adapters (peft), one named adapter per modality, chosen once per call."""

import warnings

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from .config import RegionBLIPConfig

# HF Blip2QFormer names: self-attention `attention.attention.*`, cross-attention `crossattention.attention.*`.
QFORMER_TARGETS = [
    "attention.attention.query", "attention.attention.value",
    "crossattention.attention.query", "crossattention.attention.value",
]
OPT_TARGETS = ["q_proj", "v_proj"]


def add_adapters(module: nn.Module, names: list[str], targets: list[str], config: RegionBLIPConfig) -> None:
    """Inject one LoRA adapter per name into `module`'s target Linears (B = 0 at init: outputs unchanged)."""
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets)
    with warnings.catch_warnings():  # peft warns on a second adapter in one model: several are the point here
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        for name in names:
            inject_adapter_in_model(lora, module, adapter_name=name)


def lora_layers(module: nn.Module) -> list[LoraLayer]:
    return [m for m in module.modules() if isinstance(m, LoraLayer)]


def activate_adapter(module: nn.Module, name: str | None) -> None:
    """Run `module` with adapter `name`, or with no adapter at all (the plain base weights) for None.

    peft's switch also sets requires_grad on adapter weights; which weights train is the training stage's decision
    (RegionBLIP.freeze_for), so the flags are put back as they were.
    """
    for layer in lora_layers(module):
        flags = [(p, p.requires_grad) for p in layer.parameters()]
        if name is None or name not in layer.lora_A:
            layer.enable_adapters(False)
        else:
            layer.enable_adapters(True)
            layer.set_adapter(name)
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
