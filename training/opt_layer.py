"""OPT's decoder layer around a given self-attention: the one statement of its residual and LayerNorm order.

transformers' OPTDecoderLayer keeps its KV cache in a cache object; the export graph (export/llm.py, flat KV
tensors) and the torch backend's static decoder (runtime/torch_decoder.py, preallocated buffers) each attend in
their own way, and both run the rest of the layer through `opt_layer`, over the layer's own submodules.
"""
from collections.abc import Callable

import torch


def opt_layer(hidden: torch.Tensor, attend: Callable[[torch.Tensor], tuple], attention_norm, ffn_norm, fc1, fc2,
              activation, norm_before: bool) -> tuple[torch.Tensor, tuple]:
    """One OPTDecoderLayer: hidden (B, T, D) -> (hidden (B, T, D), what `attend` returned besides its output).
    `attend(x)` -> (attention output (B, T, D), *extra); LayerNorm before each sub-block when `norm_before`
    (do_layer_norm_before, every OPT but 350M), after each residual otherwise."""
    residual = hidden
    if norm_before:
        hidden = attention_norm(hidden)
    attended, *extra = attend(hidden)
    hidden = residual + attended
    if not norm_before:
        hidden = attention_norm(hidden)
    residual = hidden
    if norm_before:
        hidden = ffn_norm(hidden)
    hidden = residual + fc2(activation(fc1(hidden)))
    if not norm_before:
        hidden = ffn_norm(hidden)
    return hidden, tuple(extra)
