"""LoRA for export: merge one adapter into plain Linears, or stack several chosen per batch row."""
import copy

import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from torch import nn


def _linear_parts(module: nn.Module) -> tuple[nn.Linear, LoraLayer | None]:
    if isinstance(module, LoraLayer):
        return module.get_base_layer(), module
    return module, None


def _lora_delta(lora: LoraLayer | None, adapter: str | None) -> torch.Tensor | None:
    """scale * B @ A of one adapter, (out, in); None when there is none to apply."""
    if lora is None or adapter is None or adapter not in lora.lora_A:
        return None
    return lora.scaling[adapter] * (lora.lora_B[adapter].weight @ lora.lora_A[adapter].weight)


def merged_linear(module: nn.Module, adapter: str | None) -> nn.Linear:
    """A plain Linear equal to `module` with `adapter` active (or no adapter for None)."""
    base, lora = _linear_parts(module)
    merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
    delta = _lora_delta(lora, adapter)
    with torch.no_grad():
        merged.weight.copy_(base.weight if delta is None else base.weight + delta)
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged


def merged_copy(module: nn.Module, adapter: str | None) -> nn.Module:
    """A deep copy of `module` with every LoRA layer replaced by its merged plain Linear."""
    merged = copy.deepcopy(module)
    for name, child in list(merged.named_modules()):
        if isinstance(child, LoraLayer):
            parent_name, _, attribute = name.rpartition(".")
            setattr(merged.get_submodule(parent_name), attribute, merged_linear(child, adapter))
    return merged.eval()


class StackedLoRALinear(nn.Module):
    """y = x W^T + b + scale_a * (x A_a^T) B_a^T, with the adapter a chosen per batch row."""

    def __init__(self, module: nn.Module, adapters: list[str]):
        super().__init__()
        base, lora = _linear_parts(module)
        self.weight, self.bias = base.weight, base.bias
        a, b = [], []
        for name in adapters:
            if lora is None or name not in lora.lora_A:
                raise ValueError(f"adapter {name!r} is not in the language model: export only trained modalities")
            a.append(lora.lora_A[name].weight)
            b.append(lora.scaling[name] * lora.lora_B[name].weight)  # scale folded into B
        # The extra last row is all zeros: adapter id len(adapters) runs the base weights alone.
        self.lora_a = nn.Parameter(torch.cat([torch.stack(a), torch.zeros_like(a[0])[None]]).detach())
        self.lora_b = nn.Parameter(torch.cat([torch.stack(b), torch.zeros_like(b[0])[None]]).detach())

    def forward(self, x: torch.Tensor, adapter_ids: torch.Tensor) -> torch.Tensor:
        low_rank = torch.einsum("bti,bri->btr", x, self.lora_a[adapter_ids])  # (B, T, r)
        return F.linear(x, self.weight, self.bias) + torch.einsum("btr,bor->bto", low_rank, self.lora_b[adapter_ids])
