"""RegionBLIP inference over a bundle's graphs: encoders, per-modality Q-Formers, the KV-cached LLM.

Any runner with run(graph_name, feeds, outputs=None) -> the outputs named (all when None) serves (ONNX
Runtime, TensorRT). A frame's image or scene features are computed once and every region of the call
decodes in one batch.

Decoding keeps the KV cache in the runner's device memory (runtime/device_kv.py) where the runner says to
(keeps_kv_on_device(num_beams): TensorRT always, ONNX Runtime on a GPU and for beam search on CPU), and
passes it to the runner as numpy feeds each step otherwise (as well as for any other runner, a bundle whose
graph does not rank tokens, or more beams than it ranks for). Either
way `transfers` counts the bytes that cross between host and runner per decode step.

Text prompts (a region's `Question: ... Answer:`) need an llm graph with the `padding` input (export/llm.py);
a bundle exported before it describes without prompts as before and refuses any prompt, saying so.
"""
import time

import numpy as np

from contract.generation import GenerationSettings
from contract.modalities import POINT_MODALITIES, REGION_MODALITIES
from runtime.bundle import Bundle
from runtime.decoding import Cancelled, Decoded, LanguageModelStep, decode, never, rank_logits
from runtime.device_kv import DeviceLanguageModelStep
from runtime.device_memory import NumpyMemory, Transfers
from runtime.prompts import cannot_pad, no_padding


class LanguageModelGraph:
    """A LanguageModelStep over the bundle's llm graph, with each prompt row's LoRA adapter.

    Calling it gives the whole distribution, (logits (B, V), present); top_tokens asks the graph for only its
    ranked tokens, so that the (B, V) logits never leave the runner. The past and present are numpy arrays,
    fed to and fetched from the runner every step: `transfers` counts them, the bytes that cross to a device.
    """

    def __init__(self, runner, bundle: Bundle, adapter_ids: np.ndarray | None, transfers: Transfers | None = None):
        llm, graph = bundle.manifest.llm, bundle.graph("llm")
        self.runner, self.adapter_ids = runner, adapter_ids
        self.transfers = transfers if transfers is not None else Transfers()
        self.past_names = llm.past_names
        self.past_shape = (llm.num_heads, 0, llm.head_dim)
        shapes = {spec.name: spec.shape for spec in graph.outputs}
        self.vocab_size = shapes["logits"][-1]
        # Bundles exported before the graph ranked tokens have neither log_prob_bias nor top_ids.
        self.takes_bias = "log_prob_bias" in graph.input_names
        self.top_k = shapes["top_ids"][-1] if "top_ids" in shapes else 0
        self.present_names = [name.replace("past_", "present_", 1) for name in self.past_names]
        self._no_bias = np.zeros(self.vocab_size, np.float32)  # what the logits call feeds a graph that ranks
        self.path = bundle.path
        self.takes_padding = bundle.takes_prompts

    def __call__(self, prefix_embeds, input_ids, past, padding=None):
        feeds = self._feeds(prefix_embeds, input_ids, past, self._no_bias, padding)
        logits, *present = self._run(feeds, ["logits", *self.present_names], decode=past is not None)
        return logits, present

    def top_tokens(self, prefix_embeds, input_ids, past, log_prob_bias, k, padding=None):
        if k > self.top_k:  # a bundle from before the graph ranked tokens, or 2 x num_beams > its K: rank here
            logits, present = self(prefix_embeds, input_ids, past, padding)
            return (*rank_logits(logits, log_prob_bias, k), present)
        feeds = self._feeds(prefix_embeds, input_ids, past, log_prob_bias, padding)
        top_log_probs, top_ids, *present = self._run(feeds, ["top_log_probs", "top_ids", *self.present_names],
                                                     decode=past is not None)
        return top_log_probs, top_ids, present

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str], decode: bool) -> list[np.ndarray]:
        results = self.runner.run("llm", feeds, outputs)
        self.transfers.to_device += sum(np.asarray(array).nbytes for array in feeds.values())
        self.transfers.to_host += sum(result.nbytes for result in results)
        self.transfers.end_call(decode)
        return results

    def _feeds(self, prefix_embeds, input_ids, past, log_prob_bias, padding) -> dict[str, np.ndarray]:
        rows = len(input_ids)
        if past is None:
            past = [np.zeros((rows, *self.past_shape), np.float32)] * len(self.past_names)
        feeds = {"prefix_embeds": np.ascontiguousarray(prefix_embeds, np.float32), "input_ids": input_ids,
                 **dict(zip(self.past_names, past))}
        if self.takes_bias:
            feeds["log_prob_bias"] = log_prob_bias
        if self.takes_padding:
            feeds["padding"] = no_padding(rows) if padding is None else np.asarray(padding, np.int64)
        elif padding is not None:
            raise ValueError(cannot_pad(self.path))
        if self.adapter_ids is not None:  # beam search repeats each prompt row, keeping its beams together
            feeds["adapter_ids"] = np.repeat(self.adapter_ids, rows // len(self.adapter_ids))
        return feeds

    def reorder(self, past, rows):
        return [p[rows] for p in past]


class GraphEngine:
    def __init__(self, bundle: Bundle, runner, device_kv: bool | None = None):
        """`device_kv`: keep the KV cache in the runner's device memory while decoding (True: always, on a
        NumpyMemory for a runner without memory of its own; False: never; None: as the runner says)."""
        self.bundle, self.runner, self.device_kv = bundle, runner, device_kv
        self.backend = runner.backend
        self.transfers = Transfers()  # host<->device bytes of every decode so far (tools/bench_runtime.py reports it)
        self.memory = None
        if hasattr(runner, "device_memory"):
            self.memory = runner.device_memory(self.transfers)
        elif device_kv:
            self.memory = NumpyMemory(runner, bundle.manifest.graphs, self.transfers)
        # Q-Former graphs that crop each region's own points (point_region_crop) take the scenes too
        self.takes_points = {name for name in bundle.manifest.graphs
                             if name.startswith("qformer_") and "points" in bundle.graph_inputs(name)}

    def adapter_ids(self, modalities: list[str]) -> np.ndarray | None:
        llm = self.bundle.manifest.llm
        if not llm.stacked:
            return None
        return np.array([llm.adapter_ids[m] for m in modalities], dtype=np.int64)

    def language_model(self, modality: str, prompt: np.ndarray, settings: GenerationSettings,
                       text_length: int = 1) -> LanguageModelStep:
        """The step that decodes `prompt` (R, Q, D), followed by `text_length` text tokens (BOS and the longest text
        prompt), under `settings`: one with its cache in device memory where device_kv (or the runner) says so and
        the graph ranks enough tokens (greedy 1, beam search 2 x num_beams)."""
        adapter_ids = self.adapter_ids([modality] * len(prompt))
        host = LanguageModelGraph(self.runner, self.bundle, adapter_ids, self.transfers)
        wanted = 1 if settings.num_beams == 1 else 2 * settings.num_beams
        on_device = self.device_kv
        if on_device is None:
            ask = getattr(self.runner, "keeps_kv_on_device", None)
            on_device = ask is not None and ask(settings.num_beams)
        if not on_device or self.memory is None or wanted > host.top_k:
            return host
        # The cache's longest: the soft prompt, the text, and every generated token fed back but the last.
        max_length = prompt.shape[1] + text_length + settings.max_new_tokens - 1
        return DeviceLanguageModelStep(self.memory, self.bundle, adapter_ids, max_length)

    def features(self, modality: str, frames: np.ndarray) -> np.ndarray:
        if modality in POINT_MODALITIES:
            return self.runner.run("point_encoder", {"points": frames})[0]
        return self.runner.run("vision", {"pixel_values": frames})[0]

    def soft_prompt(self, modality: str, features, boxes=None, frame_index=None, frames=None) -> np.ndarray:
        """`frames`: the scenes themselves, for a bundle whose point-region Q-Former crops each region's cloud."""
        graph = f"qformer_{modality}"
        feeds = {"features": features}
        if modality in REGION_MODALITIES:
            feeds.update(boxes=boxes.reshape(len(boxes), -1).astype(np.float32), frame_index=frame_index)
        if graph in self.takes_points:
            if frames is None:
                raise ValueError(f"{graph} crops each region's points: pass the scenes as frames=")
            feeds["points"] = frames
        return self.runner.run(graph, feeds)[0]

    def generate(self, modality: str, frames: np.ndarray, settings: GenerationSettings, boxes=None,
                 frame_index=None, cancelled=never, prompt_ids=None) -> tuple[list[Decoded], dict[str, float]]:
        """Describe each region (or each frame): (decoded rows, stage timings in ms). `prompt_ids`: each row's text
        prompt tokens (BOS not included; empty for none), or None. Raises Cancelled between graphs and decode steps
        once `cancelled()` is true."""
        text_length = 1 + max(map(len, prompt_ids or ()), default=0)
        if text_length > 1 and not self.bundle.takes_prompts:
            raise ValueError(cannot_pad(self.bundle.path))
        timings, start = {}, time.perf_counter()
        features = self.features(modality, frames)
        timings["encode"] = 1e3 * (time.perf_counter() - start)
        start = time.perf_counter()
        if cancelled():
            raise Cancelled("describing was cancelled after the encoder (the describer is shutting down)")
        prompt = self.soft_prompt(modality, features, boxes, frame_index, frames)
        timings["qformer"] = 1e3 * (time.perf_counter() - start)
        start = time.perf_counter()
        step = self.language_model(modality, prompt, settings, text_length)
        decoded = decode(step, prompt, settings, cancelled, prompt_ids)
        timings["decode"] = 1e3 * (time.perf_counter() - start)
        return decoded, timings
