"""The torch reference: the checkpoint's own RegionBLIP.generate (transformers' generate inside).

The only runtime module that imports training/, and only when this backend is chosen.
"""
import time
from pathlib import Path

import numpy as np

from contract.generation import GenerationSettings
from contract.modalities import POINT_MODALITIES, REGION_MODALITIES
from runtime.decoding import Cancelled, Decoded, never


class TorchEngine:
    backend = "torch"

    def __init__(self, checkpoint: str | Path, device: str = "cpu"):
        import torch

        from training.modeling_regionblip import RegionBLIP

        self.torch = torch
        self.device = device
        self.model = RegionBLIP.from_pretrained(checkpoint).to(device).eval()

    def generate(self, modality: str, frames: np.ndarray, settings: GenerationSettings, boxes=None,
                 frame_index=None, cancelled=never) -> tuple[list[Decoded], dict[str, float]]:
        """As GraphEngine.generate; transformers' generate stops at its next step once `cancelled()` is true."""
        torch = self.torch
        start = time.perf_counter()
        tensor = torch.from_numpy(frames).to(self.device)
        inputs = {"points": tensor} if modality in POINT_MODALITIES else {"pixel_values": tensor}
        if modality in REGION_MODALITIES:
            inputs["boxes"] = torch.from_numpy(boxes.reshape(len(boxes), -1).astype(np.float32)).to(self.device)
            inputs["frame_index"] = torch.from_numpy(frame_index).to(self.device)
        generated = self.model.generate(modality, **inputs, num_beams=settings.num_beams,
                                        max_new_tokens=settings.max_new_tokens,
                                        min_new_tokens=settings.min_new_tokens, eos_token_id=settings.eos_token_id,
                                        stop=cancelled)
        if cancelled():
            raise Cancelled("describing was cancelled between decode steps (the describer is shutting down)")
        decoded = []
        for tokens, score in zip(generated.token_ids.tolist(), generated.scores.tolist()):
            kept = []
            for token in tokens:
                if token == settings.eos_token_id:
                    break
                kept.append(token)
            decoded.append(Decoded(token_ids=tuple(kept), score=float(score)))
        return decoded, {"generate": 1e3 * (time.perf_counter() - start)}
