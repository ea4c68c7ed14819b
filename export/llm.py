"""The OPT language model as an export graph: flat KV tensors in and out, LoRA merged or stacked.

transformers 5 keeps its KV cache in a DynamicCache object that ONNX cannot carry, so this module
re-states OPT's decoder over the same weight tensors (nothing is copied but the LoRA merge) with
the cache as plain tensors: past_key_i / past_value_i (B, H, S, hd) in, present_* (B, H, S + T, hd)
out. One graph serves prefill (S = 0) and decode, so the weights are stored and loaded once.

Inputs: prefix_embeds (B, P, D) placed before the embeddings of input_ids (B, T) (prefill: the soft
prompt, then BOS and the row's text prompt; decode: P = 0 and the last token), optional adapter_ids (B,),
optional padding (B, 2). Output: the logits of the last position (B, V): generation never needs the others.

padding: rows whose text prompts differ in length decode in one batch with the shorter ones left-padded
(pads between the soft prompt and BOS, as BLIP-2's processor pads). Each row's padded cache positions are
[padding[b, 0], padding[b, 1]): transformers' attention_mask is 0 there and 1 elsewhere, and the graph
does what OPT does with such a mask: padded keys are never attended, and a token's position is
cumsum(mask) - 1 (OPTLearnedPositionalEmbedding). The range is given rather than the mask because it is
constant for a whole decode, so a device keeps it from the prefill on, and beam search's reorders never
move it (a row's beams share their region's padding). An empty range (start == end) is no padding.

The decoder needs only the likeliest few next tokens, so the graph ranks them itself (top_tokens, called by
export/graphs.py's LanguageModel):
log_softmax over the vocabulary plus log_prob_bias (V,) (0, or -inf for a token the decoder forbids) picks
the TOP_K best (equal values: lower id first, as ONNX TopK and numpy's argmax), returned as top_ids (B, K)
with their unbiased log-probs top_log_probs (B, K). The (B, V) logits stay an output for consumers that
want the whole distribution.

LoRA: with one modality its adapter is merged into q_proj/v_proj (W + scale * B @ A). With several,
the base weights stay once and every adapter is stacked; `adapter_ids` picks one per batch row, and
the id len(adapters) means no adapter (the plain image modality), so camera and LiDAR regions of
different modalities decode in one batch.
"""
import torch
import torch.nn.functional as F
from torch import nn

from export.lora import StackedLoRALinear, merged_linear
from training.opt_layer import opt_layer

# Candidates the graph ranks per row. Beam search takes 2 x num_beams per beam, so this serves up to 8 beams;
# a fixed size, so that TensorRT can build the TopK.
TOP_K = 16


class ExportableOPT(nn.Module):
    """OPTForCausalLM's decoder with flat KV tensors, for ONNX export."""

    def __init__(self, opt: nn.Module, adapters: list[str], stacked: bool | None = None):
        super().__init__()
        config = opt.config
        decoder = opt.model.decoder
        self.adapters = list(adapters)
        # Stacked whenever rows may differ: several adapters, or one adapter beside plain (image) rows.
        self.stacked = len(self.adapters) > 1 if stacked is None else stacked
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.layer_norm_before = config.do_layer_norm_before
        self.activation = decoder.layers[0].activation_fn
        self.embed_positions = decoder.embed_positions
        self.project_in, self.project_out = decoder.project_in, decoder.project_out
        self.final_layer_norm = decoder.final_layer_norm
        self.tied = opt.lm_head.weight is decoder.embed_tokens.weight
        if self.tied:
            # OPT ties its output projection to the token embedding. Traced as is, the exporter writes the
            # matrix twice (once transposed for the MatMul); held once as (D, V), the logits are a plain
            # MatMul and a token's embedding is a gather of one column.
            self.token_embedding_t = nn.Parameter(decoder.embed_tokens.weight.detach().t().contiguous(),
                                                  requires_grad=False)
        else:
            self.embed_tokens, self.lm_head = decoder.embed_tokens, opt.lm_head
        self.layers = nn.ModuleList()
        for layer in decoder.layers:
            attention = layer.self_attn
            parts = nn.Module()
            parts.k_proj, parts.out_proj = attention.k_proj, attention.out_proj
            if self.stacked:
                parts.q_proj = StackedLoRALinear(attention.q_proj, self.adapters)
                parts.v_proj = StackedLoRALinear(attention.v_proj, self.adapters)
            else:
                adapter = self.adapters[0] if self.adapters else None
                parts.q_proj = merged_linear(attention.q_proj, adapter)
                parts.v_proj = merged_linear(attention.v_proj, adapter)
            parts.attention_norm, parts.ffn_norm = layer.self_attn_layer_norm, layer.final_layer_norm
            parts.fc1, parts.fc2 = layer.fc1, layer.fc2
            self.layers.append(parts)
        if self.stacked:  # one row mask serves every stacked Linear (StackedLoRALinear.rows)
            masks = [p.block_adapter for parts in self.layers for p in (parts.q_proj, parts.v_proj)]
            if any(not torch.equal(mask, masks[0]) for mask in masks):
                raise ValueError("the LoRA adapters differ in rank between layers: stacked export needs one rank")

    def _project(self, linear: nn.Module, x: torch.Tensor, adapter_rows) -> torch.Tensor:
        return linear(x, adapter_rows) if self.stacked else linear(x)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H*hd) -> (B, H, T, hd)
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _attention(self, parts, hidden, past_key, past_value, adapter_rows, visible):
        query = self._heads(self._project(parts.q_proj, hidden, adapter_rows)) * self.head_dim**-0.5
        key = torch.cat([past_key, self._heads(parts.k_proj(hidden))], dim=2)  # (B, H, S + T, hd)
        value = torch.cat([past_value, self._heads(self._project(parts.v_proj, hidden, adapter_rows))], dim=2)
        scores = (query @ key.transpose(-1, -2)).masked_fill(~visible, torch.finfo(query.dtype).min)
        attended = scores.softmax(-1) @ value  # (B, H, T, hd)
        return parts.out_proj(attended.transpose(1, 2).flatten(2)), key, value

    def _block(self, parts, hidden, past_key, past_value, adapter_rows, visible):
        hidden, (key, value) = opt_layer(
            hidden, lambda x: self._attention(parts, x, past_key, past_value, adapter_rows, visible),
            parts.attention_norm, parts.ffn_norm, parts.fc1, parts.fc2, self.activation, self.layer_norm_before)
        return hidden, key, value

    def forward(self, prefix_embeds: torch.Tensor, input_ids: torch.Tensor, past: list[torch.Tensor],
                adapter_ids: torch.Tensor | None = None, padding: torch.Tensor | None = None):
        """past: [key_0, value_0, key_1, ...]; padding (B, 2) or None (see the module's doc); returns (last logits
        (B, V), [present key_0, value_0, ...])."""
        embeds = torch.cat([prefix_embeds, self._embed(input_ids)], dim=1)  # (B, P + T, D)
        past_length, new = past[0].shape[2], embeds.shape[1]
        slots = torch.arange(past_length + new, device=embeds.device)  # (S + T,) every cache position
        # New token i sits at slot S + i and sees every slot up to its own.
        visible = slots[None, :] <= slots[past_length:, None]  # (T, S + T)
        if padding is None:
            positions = slots[None, past_length:]  # (1, T)
        else:
            mask = (slots < padding[:, :1]) | (slots >= padding[:, 1:])  # (B, S + T): transformers' attention_mask
            positions = (mask.long().cumsum(-1) * mask - 1)[:, past_length:]  # (B, T), as OPT computes them
            visible = visible & mask[:, None, None, :]  # (B, 1, T, S + T)
        # OPT's learned positions are offset by 2 (OPTLearnedPositionalEmbedding).
        hidden = F.embedding(positions + 2, self.embed_positions.weight)  # (B | 1, T, D)
        if self.project_in is not None:
            embeds = self.project_in(embeds)
        hidden = embeds + hidden
        adapter_rows = self.layers[0].q_proj.rows(adapter_ids, hidden.dtype) if self.stacked else None
        present = []
        for index, parts in enumerate(self.layers):
            hidden, key, value = self._block(parts, hidden, past[2 * index], past[2 * index + 1], adapter_rows,
                                             visible)
            present += [key, value]
        last = hidden[:, -1]  # (B, D)
        if self.final_layer_norm is not None:
            last = self.final_layer_norm(last)
        if self.project_out is not None:
            last = self.project_out(last)
        logits = last @ self.token_embedding_t if self.tied else self.lm_head(last)  # (B, V)
        return logits, present

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tied:
            return self.token_embedding_t[:, input_ids].permute(1, 2, 0)  # (D, B, T) -> (B, T, D)
        return self.embed_tokens(input_ids)

    def empty_past(self, batch: int, dtype=torch.float32) -> list[torch.Tensor]:
        shape = (batch, self.num_heads, 0, self.head_dim)
        return [torch.zeros(shape, dtype=dtype) for _ in range(2 * len(self.layers))]


def top_tokens(logits: torch.Tensor, log_prob_bias: torch.Tensor, k: int = TOP_K):
    """The k best next tokens under log_softmax(logits) + log_prob_bias, best first: (their unbiased log-probs
    (B, k), their ids (B, k)). The score of a description is taken under the model's own distribution, so the
    bias only ranks (no renormalisation)."""
    log_probs = logits.log_softmax(-1)  # (B, V)
    top_ids = (log_probs + log_prob_bias).topk(min(k, logits.shape[-1]), dim=-1).indices  # (B, K)
    return log_probs.gather(-1, top_ids), top_ids
