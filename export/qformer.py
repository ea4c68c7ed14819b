"""A region Q-Former graph that projects each frame's features to cross-attention keys and values once per frame.

The model's own RegionPrompt (training/region_prompt.py) copies each region's frame features, adds PaFE's box mark
and hands the Q-Former one (R, L, W) block, so every cross-attention layer projects the same frame once per region:
an ONNX Runtime profile of the bench preset put 46 % of the Q-Former's kernel time there. Keys and values are
linear in the features, so here each is computed per frame and gathered per region, and the box mark, one learned
vector e weighted by each token's overlap with the box, becomes the cheap correction overlap x (W e):

    W (f + overlap e) + b  =  (W f + b)  +  overlap (W e)

A point region's own cloud (point_region_crop) is projected per region, as it is the region's alone. The Q-Former
itself still runs as transformers wrote it: its cross-attention key and value Linears are swapped for stand-ins
that return the keys and values computed here (it reads its encoder states only through them, and their shape).
The export checks the graph against the model's own RegionPrompt, like every other graph (export/onnx.py).
"""
import torch
import torch.nn.functional as F
from torch import nn

from training.pafe import crop_box_points, patch_box_overlap
from training.region_prompt import RegionPrompt


class _FrameProjection(nn.Module):
    """Stands in for a cross-attention key or value Linear: returns what FramewiseRegionPrompt computed for it."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.linear = linear
        self.projected: torch.Tensor | None = None

    def forward(self, _encoder_states: torch.Tensor) -> torch.Tensor:
        return self.projected


class FramewiseRegionPrompt(nn.Module):
    """RegionPrompt's forward for a region modality, with keys and values projected once per frame. `prompt` must
    hold a Q-Former of its own (the export's merged copy): its cross-attention Linears are swapped in place."""

    def __init__(self, prompt: RegionPrompt):
        super().__init__()
        if not prompt.region:
            raise ValueError("FramewiseRegionPrompt is for region modalities: a whole frame is one row already")
        self.prompt = prompt
        self.projections = nn.ModuleList()
        for layer in prompt.qformer.encoder.layer:
            if layer.has_cross_attention:
                attention = layer.crossattention.attention
                for name in ("key", "value"):
                    stand_in = _FrameProjection(getattr(attention, name))
                    setattr(attention, name, stand_in)
                    self.projections.append(stand_in)

    def forward(self, features, boxes, frame_index, points=None) -> tuple[torch.Tensor, torch.Tensor]:
        """As RegionPrompt.forward with boxes (R, k) and frame_index (R,): query outputs (R, Q, W), soft prompt."""
        prompt, regions = self.prompt, boxes.shape[0]
        overlap = patch_box_overlap(boxes, prompt.patch_grid)[..., None] if prompt.feature_mask else None  # (R, L, 1)
        crop = None
        if prompt.crop:
            crop = crop_box_points(points[frame_index], boxes, prompt.crop)  # (R, K, 3)
            crop = prompt.point_adapter(prompt.point_encoder(crop))  # (R, K', W_enc)
        for stand_in in self.projections:
            linear = stand_in.linear
            projected = linear(features)[frame_index]  # (F, L, H) once per frame -> (R, L, H)
            if overlap is not None:
                projected = projected + overlap * F.linear(prompt.region_feature_embedding, linear.weight)
            if crop is not None:
                projected = torch.cat([projected, linear(crop)], dim=1)
            stand_in.projected = projected
        length = features.shape[1] + (crop.shape[1] if crop is not None else 0)
        queries = (prompt.query_tokens + prompt.region_position_embedding(boxes)[:, None])  # (R, Q, W)
        shape_only = features.new_zeros(()).expand(regions, length, 1)  # the Q-Former reads only its shape
        mask = torch.ones((regions, length), dtype=torch.long, device=features.device)
        try:
            output = prompt.qformer(query_embeds=queries, encoder_hidden_states=shape_only,
                                    encoder_attention_mask=mask).last_hidden_state  # (R, Q, W)
        finally:
            for stand_in in self.projections:
                stand_in.projected = None
        return output, prompt.language_projection(output)
