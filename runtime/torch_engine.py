"""The torch backend: the checkpoint's own model, decoded by transformers' generate or by a static-cache decoder.

The only runtime module that imports training/, and only when this backend is chosen. Two decoders:
  transformers  RegionBLIP.generate (transformers' generate inside): the fp32 reference, CPU's default
  static        runtime/torch_decoder.py through runtime/decoding.py's loop: a KV cache preallocated for the call's
                maximum length, fp16/bf16, the decode step in a CUDA graph; CUDA's default (fp16, graphs)
On CPU the reference stays the default: it is the check that does not share runtime/decoding.py with the bundle
backends. The static decoder gives its tokens (tests/test_torch_decoder.py) and, without graphs, is faster on CPU
too (it skips generate's re-scoring pass): choose it with decoder="static".
"""
import threading
import time
from pathlib import Path

import numpy as np

from contract.generation import GenerationSettings
from contract.modalities import BY_NAME, POINT_MODALITIES, REGION_MODALITIES
from runtime.decoding import Cancelled, Decoded, decode, never, text_inputs

DECODERS = ("transformers", "static")


class TorchEngine:
    backend = "torch"

    def __init__(self, checkpoint: str | Path, device: str = "cpu", *, decoder: str | None = None,
                 precision: str | None = None, cuda_graphs: bool | None = None):
        """`decoder`, `precision` ("fp32", "fp16", "bf16") and `cuda_graphs` default by device: CUDA takes the static
        decoder in fp16 with graphs, other devices the fp32 reference."""
        import torch

        from runtime.torch_decoder import PRECISIONS, StaticDecoder
        from training.modeling_regionblip import RegionBLIP

        cuda = torch.device(device).type == "cuda"
        self.decoder = decoder or ("static" if cuda else "transformers")
        self.precision = precision or ("fp16" if cuda and self.decoder == "static" else "fp32")
        self.cuda_graphs = cuda and self.decoder == "static" if cuda_graphs is None else cuda_graphs
        _check_options(self.decoder, self.precision, self.cuda_graphs, cuda, device)
        self.torch, self.device = torch, device
        self.model = RegionBLIP.from_pretrained(checkpoint).to(device).eval()
        self.static = None
        if self.decoder == "static":
            # The LLM and the ViT run in the chosen precision; the Q-Former, PaFE and Point-BERT (FPS and kNN need
            # exact distances) stay fp32, as transformers keeps BLIP-2's Q-Former.
            dtype = PRECISIONS[self.precision]
            self.model.language_model.to(dtype)
            self.model.vision_model.to(dtype)
            self.static = StaticDecoder(self.model.language_model, cuda_graphs=self.cuda_graphs)
        self._lock = threading.Lock()  # the static decoder's caches and graphs serve one call at a time

    def generate(self, modality: str, frames: np.ndarray, settings: GenerationSettings, boxes=None,
                 frame_index=None, cancelled=never, prompt_ids=None) -> tuple[list[Decoded], dict[str, float]]:
        """As GraphEngine.generate: decoding stops at its next step once `cancelled()` is true."""
        inputs = self._inputs(modality, frames, boxes, frame_index)
        if self.static is not None:
            with self._lock:
                return self._generate_static(modality, inputs, settings, cancelled, prompt_ids)
        start = time.perf_counter()
        if prompt_ids is not None:  # BOS and each row's prompt, left-padded: what BLIP-2's generate takes
            input_ids, pads = text_inputs(prompt_ids, settings)
            inputs["input_ids"] = self.torch.from_numpy(input_ids).to(self.device)
            mask = np.arange(input_ids.shape[1])[None, :] >= pads[:, None]
            inputs["attention_mask"] = self.torch.from_numpy(mask.astype(np.int64)).to(self.device)
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

    def _inputs(self, modality, frames, boxes, frame_index) -> dict:
        torch = self.torch
        tensor = torch.from_numpy(frames).to(self.device)
        if modality in POINT_MODALITIES:
            inputs = {"points": tensor}
        else:
            inputs = {"pixel_values": tensor.to(self.model.vision_model.dtype)}
        if modality in REGION_MODALITIES:
            inputs["boxes"] = torch.from_numpy(boxes.reshape(len(boxes), -1).astype(np.float32)).to(self.device)
            inputs["frame_index"] = torch.from_numpy(frame_index).to(self.device)
        return inputs

    def _generate_static(self, modality, inputs, settings, cancelled, prompt_ids):
        from training.modeling_inputs import check_boxes

        model, start = self.model, time.perf_counter()
        with self.torch.no_grad():
            model.use_modality(modality)
            boxes = check_boxes(modality, inputs.get("boxes"))
            features = model.encode_frames(modality, inputs.get("pixel_values"), inputs.get("points")).float()
            _, prompt = model.soft_prompt(modality, features, boxes, inputs.get("frame_index"), inputs.get("points"))
            prompt = prompt.float().cpu().numpy()  # (R, Q, D): decoding's loop takes numpy; once per call
            timings = {"soft_prompt": 1e3 * (time.perf_counter() - start)}
            start = time.perf_counter()
            text_length = 1 + max(map(len, prompt_ids or ()), default=0)  # BOS and the longest text prompt
            step = self.static.step(prompt.shape[1] + text_length + settings.max_new_tokens, BY_NAME[modality].adapter)
            decoded = decode(step, prompt, settings, cancelled, prompt_ids)
        timings["decode"] = 1e3 * (time.perf_counter() - start)
        return decoded, timings


def _check_options(decoder: str, precision: str, cuda_graphs: bool, cuda: bool, device: str) -> None:
    from runtime.torch_decoder import PRECISIONS

    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r} is not one of {', '.join(DECODERS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if decoder == "transformers" and (precision != "fp32" or cuda_graphs):
        raise ValueError("decoder 'transformers' is the fp32 reference, without CUDA graphs: use decoder='static' "
                         "for fp16, bf16 or CUDA graphs")
    if cuda_graphs and not cuda:
        raise ValueError(f"CUDA graphs need a CUDA device (device {device!r} given): pass cuda_graphs=False")
