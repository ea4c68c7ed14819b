"""A region Q-Former graph that projects each frame's features to cross-attention keys and values once per frame.

The model's own RegionPrompt (training/region_prompt.py) copies each region's frame features, adds PaFE's box mark
and hands the Q-Former one (R, L, W) block, so every cross-attention layer projects the same frame once per region:
an ONNX Runtime profile of the bench preset put 46 % of the Q-Former's kernel time there. Keys and values are
linear in the features, so here each is computed per frame and the box mark, one learned vector e weighted by each
token's overlap with the box, becomes a cheap correction per region:

    W (f + overlap e) + b  =  (W f + b)  +  overlap (W e)

and attention never builds a region's own keys or values: with q a region's query and K, V its frame's,

    scores  = q K^T + (q . W_k e) overlap^T          out = p V + (p overlap) (W_v e)      (p = softmax(scores))

A point region's own cloud (point_region_crop) is projected per region, as it is the region's alone, and attended
beside the frame's tokens. The Q-Former itself still runs as transformers wrote it, but for its cross-attention
modules (Blip2QFormerMultiHeadAttention), which are swapped for _FrameCrossAttention over the same Linears: it
reads its encoder states only through them, and their shape. Every token is attended (the model's encoder mask is
all ones), so no mask is built either. Against keys and values projected once per frame, then gathered, marked and
split into heads per region (this module's previous form), the bench preset's 16-region Q-Former, 2 threads,
median of 40 interleaved calls: fp32 33.5 against 38.0 ms, int8-dynamic 16.9 against 22.2 ms (issue #19).
The export checks the graph against the model's own RegionPrompt, like every other graph (export/onnx.py).
"""
import torch
import torch.nn.functional as F
from torch import nn

from training.pafe import crop_box_points, patch_box_overlap
from training.region_prompt import RegionPrompt


class _FrameCrossAttention(nn.Module):
    """Stands in for a cross-attention layer's Blip2QFormerMultiHeadAttention, with the same query, key and value
    Linears: each region's queries attend its frame's keys and values (computed once per frame), the box mark's
    correction and the region's own point tokens added per region. FramewiseRegionPrompt sets `frames` for a call."""

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.query, self.key, self.value = attention.query, attention.key, attention.value
        self.heads, self.head_size = attention.num_attention_heads, attention.attention_head_size
        self.scaling = attention.scaling
        self.frames: dict | None = None

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, H) -> (N, heads, T, d)
        return x.unflatten(-1, (self.heads, self.head_size)).transpose(1, 2)

    def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                **_kwargs):
        frames = self.frames
        query = self._split(self.query(hidden_states))  # (R, h, Q, d)
        index = frames["frame_index"]
        keys = self._split(self.key(frames["features"]))[index]  # (F, h, L, d) once per frame -> (R, h, L, d)
        values = self._split(self.value(frames["features"]))[index]
        scores = query @ keys.transpose(-1, -2)  # (R, h, Q, L)
        overlap = frames["overlap"]  # (R, L) or None
        if overlap is not None:
            mark = frames["mark"]  # (W,): the box mark's embedding e
            mark_key = F.linear(mark, self.key.weight).view(self.heads, self.head_size, 1)  # W_k e per head
            scores = scores + (query @ mark_key) * overlap[:, None, None, :]
        crop = frames["crop"]  # (R, K, W) the region's own point tokens, or None
        if crop is not None:
            scores = torch.cat([scores, query @ self._split(self.key(crop)).transpose(-1, -2)], dim=-1)
        probs = (scores * self.scaling).softmax(-1)
        length = keys.shape[2]
        frame_probs = probs[..., :length]
        out = frame_probs @ values  # (R, h, Q, d)
        if overlap is not None:
            mark_value = F.linear(mark, self.value.weight).view(1, self.heads, 1, self.head_size)  # W_v e
            out = out + (frame_probs @ overlap[:, None, :, None]) * mark_value
        if crop is not None:
            out = out + probs[..., length:] @ self._split(self.value(crop))
        return out.transpose(1, 2).flatten(2), None  # (R, Q, H), as transformers' attention returns it


class FramewiseRegionPrompt(nn.Module):
    """RegionPrompt's forward for a region modality, with keys and values projected once per frame. `prompt` must
    hold a Q-Former of its own (the export's merged copy): its cross-attention modules are swapped in place."""

    def __init__(self, prompt: RegionPrompt):
        super().__init__()
        if not prompt.region:
            raise ValueError("FramewiseRegionPrompt is for region modalities: a whole frame is one row already")
        self.prompt = prompt
        self.cross_attentions = nn.ModuleList()
        for layer in prompt.qformer.encoder.layer:
            if layer.has_cross_attention:
                stand_in = _FrameCrossAttention(layer.crossattention.attention)
                layer.crossattention.attention = stand_in
                self.cross_attentions.append(stand_in)

    def forward(self, features, boxes, frame_index, points=None) -> tuple[torch.Tensor, torch.Tensor]:
        """As RegionPrompt.forward with boxes (R, k) and frame_index (R,): query outputs (R, Q, W), soft prompt."""
        prompt, regions = self.prompt, boxes.shape[0]
        frames = {"features": features, "frame_index": frame_index, "overlap": None, "crop": None}
        if prompt.feature_mask:
            frames.update(overlap=patch_box_overlap(boxes, prompt.patch_grid), mark=prompt.region_feature_embedding)
        if prompt.crop:
            crop = crop_box_points(points[frame_index], boxes, prompt.crop)  # (R, K, 3)
            frames["crop"] = prompt.point_adapter(prompt.point_encoder(crop))  # (R, K', W_enc)
        length = features.shape[1] + (frames["crop"].shape[1] if frames["crop"] is not None else 0)
        queries = (prompt.query_tokens + prompt.region_position_embedding(boxes)[:, None])  # (R, Q, W)
        shape_only = features.new_zeros(()).expand(regions, length, 1)  # the Q-Former reads only its shape
        mask = torch.ones((regions, length), dtype=torch.long, device=features.device)
        for stand_in in self.cross_attentions:
            stand_in.frames = frames
        try:
            output = prompt.qformer(query_embeds=queries, encoder_hidden_states=shape_only,
                                    encoder_attention_mask=mask).last_hidden_state  # (R, Q, W)
        finally:
            for stand_in in self.cross_attentions:
                stand_in.frames = None
        return output, prompt.language_projection(output)
