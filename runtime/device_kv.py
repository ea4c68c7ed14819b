"""Decoding whose KV cache stays in device memory (runtime/device_memory.py) from the prefill to the last token.

DeviceKVCache preallocates, for each past/present tensor of the llm graph, two buffers for the longest
cache the decode can reach (the soft prompt, BOS and the longest text prompt, and the tokens fed back). The
graph reads the past from one at the current length and writes the grown present into the other, and
the two swap: no allocation and no copy per step (the graph concatenates past and new, so it cannot
write in place). Beam search's reorder gathers the cache's rows from one buffer into the other on the
device, then they swap too.

DeviceLanguageModelStep is the LanguageModelStep (runtime/decoding.py) over that cache. Per decode step
only the fed token ids (and, for beam search, the reorder's rows) go to the device, and only the graph's
ranked tokens (top_log_probs and top_ids, (B, K) each) come back; inputs that rarely change
(log_prob_bias, adapter_ids) are uploaded again only when they do (min_new_tokens lifting the stop
token's ban: once per decode). The rows' padding (text prompts of different lengths) is constant for
the whole decode and unchanged by beam reorders: uploaded with the prefill, never again.
"""
import numpy as np

from runtime.bundle import Bundle
from runtime.device_memory import DeviceArray, DeviceMemory
from runtime.prompts import cannot_pad, no_padding


class KVCacheOverflow(ValueError):
    """A step would grow the KV cache past the length it was preallocated for."""


class DeviceKVCache:
    """`count` tensors of shape (rows, heads, length, head_dim) in `memory`, for lengths up to `capacity`."""

    def __init__(self, memory: DeviceMemory, count: int, rows: int, heads: int, head_dim: int, capacity: int,
                 dtype):
        self.memory, self.rows, self.heads, self.head_dim, self.capacity = memory, rows, heads, head_dim, capacity
        size = rows * heads * capacity * head_dim
        self.front = [memory.empty(self._shape(0), dtype, capacity=size) for _ in range(count)]  # the past
        self.back = [memory.empty(self._shape(0), dtype, capacity=size) for _ in range(count)]  # the next present
        self.length = 0

    def _shape(self, length: int) -> tuple[int, int, int, int]:
        return self.rows, self.heads, length, self.head_dim

    def past(self) -> list[DeviceArray]:
        """The cache at its current length: views of the front buffers."""
        return [buffer.view(self._shape(self.length)) for buffer in self.front]

    def present(self, new: int) -> list[DeviceArray]:
        """Where a step adding `new` positions writes the grown cache: views of the back buffers."""
        if self.length + new > self.capacity:
            raise KVCacheOverflow(f"the KV cache was preallocated for {self.capacity} positions (the soft prompt and "
                                  f"max_new_tokens, fixed when decoding began), and this step would grow it from "
                                  f"{self.length} to {self.length + new}: decode at most max_new_tokens tokens, or "
                                  f"make the step with a larger max_length")
        return [buffer.view(self._shape(self.length + new)) for buffer in self.back]

    def advance(self, new: int) -> None:
        """The step has written the present: it becomes the past."""
        self.front, self.back = self.back, self.front
        self.length += new

    def reorder(self, rows: np.ndarray) -> None:
        """Row i of the cache becomes row rows[i] (beam search keeping its best beams), gathered on the device."""
        if len(rows) != self.rows:
            raise ValueError(f"a reorder keeps the cache's {self.rows} rows, but {len(rows)} were given")
        self.memory.gather(self.past(), np.asarray(rows, np.int64),
                           [buffer.view(self._shape(self.length)) for buffer in self.back])
        self.front, self.back = self.back, self.front


class DeviceLanguageModelStep:
    """A LanguageModelStep over the bundle's llm graph run by `memory`, whose past is a DeviceKVCache.

    `max_length`: the longest cache the decode reaches: the soft prompt, the text (BOS and the longest text prompt)
    and max_new_tokens - 1 tokens fed back. The graph
    must rank tokens itself (top_ids, K per row); decoding that asks for more than K, or a bundle exported before
    the graph ranked, takes runtime/graph_engine.py's LanguageModelGraph instead.
    """

    def __init__(self, memory: DeviceMemory, bundle: Bundle, adapter_ids: np.ndarray | None, max_length: int):
        llm, graph = bundle.manifest.llm, bundle.graph("llm")
        shapes = {spec.name: spec.shape for spec in graph.outputs}
        if "top_ids" not in shapes:
            raise ValueError(f"bundle {bundle.path}'s llm graph does not rank tokens (no top_ids output), so its "
                             "logits must come to the host each step: decode with LanguageModelGraph, or re-export "
                             "the bundle with python -m export.onnx")
        self.memory, self.adapter_ids, self.max_length = memory, adapter_ids, max_length
        self.vocab_size, self.top_k = shapes["logits"][-1], shapes["top_ids"][-1]
        self.heads, self.head_dim = llm.num_heads, llm.head_dim
        self.past_names = llm.past_names
        self.present_names = [name.replace("past_", "present_", 1) for name in self.past_names]
        self.takes_bias = "log_prob_bias" in graph.input_names
        self.takes_padding = bundle.takes_prompts
        self.path = bundle.path
        # An fp16 engine's cache is fp16: the buffers hold what the graph declares.
        self.kv_dtype = memory.tensor_dtype("llm", self.past_names[0])
        self._held: dict[str, tuple[np.ndarray, DeviceArray]] = {}  # rarely changing inputs: host copy, device copy
        self._ranked: dict[str, DeviceArray] = {}  # top_log_probs and top_ids, allocated once per batch size

    def top_tokens(self, prefix_embeds, input_ids, past, log_prob_bias, k, padding=None):
        if k > self.top_k:
            raise ValueError(f"the llm graph ranks {self.top_k} tokens per row and {k} were asked for (beam search "
                             f"asks 2 x num_beams): use at most {self.top_k // 2} beams, or LanguageModelGraph")
        memory, rows = self.memory, len(input_ids)
        new = prefix_embeds.shape[1] + input_ids.shape[1]
        cache = past if past is not None else DeviceKVCache(memory, len(self.past_names), rows, self.heads,
                                                            self.head_dim, self.max_length, self.kv_dtype)
        inputs = {"prefix_embeds": memory.upload(prefix_embeds, memory.tensor_dtype("llm", "prefix_embeds")),
                  "input_ids": memory.upload(input_ids, memory.tensor_dtype("llm", "input_ids")),
                  **dict(zip(self.past_names, cache.past()))}
        if self.takes_bias:
            inputs["log_prob_bias"] = self._held_input("log_prob_bias", log_prob_bias)
        if self.takes_padding:
            inputs["padding"] = self._held_input("padding", no_padding(rows) if padding is None else padding)
        elif padding is not None:
            raise ValueError(cannot_pad(self.path))
        if self.adapter_ids is not None:  # beam search repeats each prompt row, keeping its beams together
            inputs["adapter_ids"] = self._held_input("adapter_ids",
                                                     np.repeat(self.adapter_ids, rows // len(self.adapter_ids)))
        ranked = {name: self._ranked_output(name, rows) for name in ("top_log_probs", "top_ids")}
        memory.run("llm", inputs, {**ranked, **dict(zip(self.present_names, cache.present(new)))})
        cache.advance(new)
        top_log_probs, top_ids = memory.download(ranked["top_log_probs"]), memory.download(ranked["top_ids"])
        memory.transfers.end_call(decode=past is not None)
        return top_log_probs, top_ids, cache

    def reorder(self, past: DeviceKVCache, rows: np.ndarray) -> DeviceKVCache:
        past.reorder(rows)
        return past

    def _held_input(self, name: str, array: np.ndarray) -> DeviceArray:
        """The device copy of input `name`, uploaded again only when its value changed."""
        array = np.asarray(array, self.memory.tensor_dtype("llm", name))
        held = self._held.get(name)
        if held is None or held[0].shape != array.shape or not np.array_equal(held[0], array):
            held = self._held[name] = array.copy(), self.memory.upload(array)
        return held[1]

    def _ranked_output(self, name: str, rows: int) -> DeviceArray:
        buffer = self._ranked.get(name)
        if buffer is None or buffer.shape[0] != rows:
            buffer = self._ranked[name] = self.memory.empty((rows, self.top_k), self.memory.tensor_dtype("llm", name))
        return buffer
