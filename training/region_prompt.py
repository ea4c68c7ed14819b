"""One modality's path from frame features to its soft prompt: query tokens, PaFE, the Q-Former, the projection.

RegionBLIP.soft_prompt runs it and the export traces it (export/graphs.py), so the ONNX Q-Former graphs are checked
against the model's own computation rather than a restatement of it. It holds the model's own submodules and
parameters, not copies, and is never registered in the model: the checkpoint's keys do not depend on it. The one
part that can be swapped is the Q-Former, for the export's copy with the modality's LoRA merged into its weights.
"""

import torch
from torch import nn
from transformers import Blip2QFormerModel

from contract.modalities import REGION_MODALITIES

from .pafe import crop_box_points, mark_box


class RegionPrompt(nn.Module):
    def __init__(self, model: nn.Module, modality: str, qformer: Blip2QFormerModel | None = None):
        """`model`: a RegionBLIP; `qformer`: defaults to the model's own Q-Former for `modality`."""
        super().__init__()
        config = model.config
        self.qformer = model.qformer_for(modality) if qformer is None else qformer
        self.query_tokens = model.query_tokens[modality]  # (1, Q, W)
        self.language_projection = model.language_projection[modality]
        self.region = modality in REGION_MODALITIES
        if self.region:
            self.region_position_embedding = model.region_position_embedding[modality]  # PaFE's box MLP
        self.feature_mask = modality == "image_region" and config.region_feature_mask
        if self.feature_mask:  # PaFE's box mark on the ViT features (training/pafe.py)
            self.region_feature_embedding, self.patch_grid = model.region_feature_embedding, config.patch_grid
        self.crop = config.point_region_crop if modality == "pointcloud_region" else 0
        if self.crop:  # the region's own cloud through Point-BERT (training/pafe.py)
            self.point_encoder, self.point_adapter = model.point_encoder, model.point_adapter

    def forward(self, features, boxes=None, frame_index=None, points=None) -> tuple[torch.Tensor, torch.Tensor]:
        """features (F, L, W_enc) -> query outputs (R, Q, W) and soft prompt (R, Q, D): one row per frame, or per
        region with boxes (R, k) and frame_index (R,), which may be None when F is 1 or R. points (F, N, 3): the
        scenes themselves, for the point-region crop. Unchecked: RegionBLIP.soft_prompt checks its inputs."""
        return self.from_qformer_inputs(*self.qformer_inputs(features, boxes, frame_index, points))

    def qformer_inputs(self, features, boxes=None, frame_index=None, points=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The Q-Former's inputs, as forward's arguments: queries (R, Q, W) and the features they cross-attend
        (R, L', W_enc). The Q-Former's ITG pass (training/qformer_text.py) reads the same."""
        queries = self.query_tokens  # (1, Q, W)
        if self.region:
            regions = boxes.shape[0]
            # (R, L, W_enc); frame_index None: one frame for every region, or one frame per region
            features = features.expand(regions, -1, -1) if frame_index is None else features[frame_index]
            if self.feature_mask:
                features = mark_box(features, boxes, self.region_feature_embedding, self.patch_grid)
            if self.crop:
                points = points.expand(regions, -1, -1) if frame_index is None else points[frame_index]  # (R, N, 3)
                crop = crop_box_points(points, boxes, self.crop)  # (R, K, 3)
                features = torch.cat([features, self.point_adapter(self.point_encoder(crop))], dim=1)
            queries = queries + self.region_position_embedding(boxes)[:, None]  # (R, Q, W)
        return queries.expand(features.shape[0], -1, -1), features

    def from_qformer_inputs(self, queries, features) -> tuple[torch.Tensor, torch.Tensor]:
        """Query outputs (R, Q, W) and soft prompt (R, Q, D) from qformer_inputs' output."""
        encoder_mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
        query_output = self.qformer(
            query_embeds=queries, encoder_hidden_states=features, encoder_attention_mask=encoder_mask
        ).last_hidden_state  # (R, Q, W)
        return query_output, self.language_projection(query_output)  # (R, Q, D)
