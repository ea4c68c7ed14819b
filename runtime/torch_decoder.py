"""The torch backend's own LLM decode step: a static KV cache, fp16/bf16, and on CUDA the step in a CUDA graph.

transformers' generate grows its DynamicCache by concatenation: every step allocates, and the kernels it runs depend
on the length, so there is nothing to capture. Here a call's cache is preallocated for its maximum length (soft
prompt, BOS, any text prompt, max_new_tokens); a step writes its keys and values at the current position and attends
over the whole buffer under a mask, so every decode step runs the same kernels on the same addresses. On CUDA that
step is captured once per (adapter, rows, length, k) and replayed: per step only the chosen token ids go in and the
few best tokens come out. Rows whose text prompts differ in length are left-padded (runtime/decoding.py): the cache
holds each row's padded slots, set once at the prefill, and every step masks them and counts positions past them, as
OPT does with an attention mask (position = cumsum(mask) - 1). runtime/decoding.py drives it through the
LanguageModelStep protocol, the loop the bundle backends use, beam search included.

The layers are the model's own OPT submodules (peft's LoRA Linears included, with the adapter that is active at
capture), called in OPT's order: the query scaled before the product, learned positions offset by 2, LayerNorm before
or after as the config says. No transformers cache class is used, so the code does not depend on its version.

With graphs, rows are padded up to a power of two: a frame of 13 regions reuses the 16-row graph and its cache,
rather than capturing, and keeping a cache for, every count. Padding rows repeat row 0 and are never read.
"""
import numpy as np
import torch
import torch.nn.functional as F

from training.opt_layer import opt_layer

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CAPTURE_WARMUP = 3  # eager runs on a side stream before a capture, as torch.cuda.graphs asks (cuBLAS workspaces)
KEPT_CACHES = 8  # (rows, length) caches kept between calls; the oldest goes first


class StaticCache:
    """The KV buffers of one batch, keys and values (layers, rows, heads, max_length, head_dim), the captured step's
    inputs, and its graphs. `length`: how many positions hold tokens; `live_rows`: the rows the caller asked for."""

    def __init__(self, layers: int, rows: int, heads: int, max_length: int, head_dim: int, vocab_size: int,
                 dtype: torch.dtype, device: torch.device):
        self.keys = torch.zeros((layers, rows, heads, max_length, head_dim), dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.rows, self.max_length = rows, max_length
        self.slots = torch.arange(max_length, device=device)
        self.input_ids = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.padding = torch.zeros((rows, 2), dtype=torch.long, device=device)  # each row's padded slots [start, end)
        self.bias = torch.zeros(vocab_size, dtype=torch.float32, device=device)
        self.graphs: dict = {}  # (adapter, k) -> (CUDAGraph, its output tensors)
        self.length = self.live_rows = 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


class StaticDecoder:
    """Runs an OPT causal LM (its weights as they are: cast the model first) with StaticCaches; `step()` gives the
    LanguageModelStep for one call. One call at a time: the caches and graphs are shared between calls."""

    def __init__(self, language_model: torch.nn.Module, cuda_graphs: bool = False, pad_rows: bool | None = None):
        """`pad_rows` (default: as cuda_graphs) pads each call's rows up to a power of two."""
        decoder = getattr(getattr(language_model, "model", None), "decoder", None)
        if decoder is None or not hasattr(decoder, "embed_positions"):
            raise ValueError(f"the static decoder runs OPT language models (OPTForCausalLM), got "
                             f"{type(language_model).__name__}: use the torch backend's decoder='transformers'")
        self.decoder, self.lm_head = decoder, language_model.get_output_embeddings()
        config = language_model.config
        self.layers, self.heads = config.num_hidden_layers, config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads
        self.scaling = self.head_dim ** -0.5
        self.norm_before = config.do_layer_norm_before
        self.position_offset = getattr(decoder.embed_positions, "offset", 2)
        self.max_positions = config.max_position_embeddings
        self.vocab_size = config.vocab_size
        weight = self.lm_head.weight
        self.dtype, self.device = weight.dtype, weight.device
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device, it is on {self.device}: "
                             "pass cuda_graphs=False")
        self.cuda_graphs = cuda_graphs
        self.pad_rows = cuda_graphs if pad_rows is None else pad_rows
        self.pool = torch.cuda.graph_pool_handle() if cuda_graphs else None
        self.caches: dict[tuple[int, int], StaticCache] = {}
        self._biases: dict[tuple[bytes, bytes], torch.Tensor] = {}

    def step(self, max_length: int, adapter: str | None = None) -> "StaticStep":
        """The LanguageModelStep of one call whose rows hold at most `max_length` tokens; `adapter`: the LoRA
        adapter active in the model (a graph holds the adapter it was captured with)."""
        if max_length > self.max_positions:
            raise ValueError(f"max_length {max_length} is past the model's {self.max_positions} positions: "
                             "lower max_new_tokens")
        return StaticStep(self, max_length, adapter)

    def cache(self, rows: int, max_length: int) -> StaticCache:
        """A zeroed cache for `rows` rows (padded to a power of two with pad_rows), reused between calls."""
        padded = 1 << (rows - 1).bit_length() if self.pad_rows else rows
        cache = self.caches.pop((padded, max_length), None)
        if cache is None:
            while len(self.caches) >= KEPT_CACHES:
                self.caches.pop(next(iter(self.caches)))
            cache = StaticCache(self.layers, padded, self.heads, max_length, self.head_dim, self.vocab_size,
                                self.dtype, self.device)
        self.caches[(padded, max_length)] = cache  # last used goes last
        # Masked positions must hold finite values: -inf times a stale inf or NaN would poison the softmax.
        cache.keys.zero_()
        cache.values.zero_()
        cache.padding.zero_()
        cache.length, cache.live_rows = 0, rows
        return cache

    def device_bias(self, log_prob_bias: np.ndarray) -> torch.Tensor:
        """log_prob_bias on the device, uploaded once per distinct bias (decoding uses two: none, and the stop
        token forbidden), so that a decode step sends no vocabulary-sized array."""
        forbidden = np.flatnonzero(log_prob_bias)
        key = (forbidden.tobytes(), log_prob_bias[forbidden].tobytes())
        if key not in self._biases:
            self._biases[key] = torch.from_numpy(np.ascontiguousarray(log_prob_bias, np.float32)).to(self.device)
        return self._biases[key]

    # ---- the model ----------------------------------------------------------------------------------------------

    def forward(self, cache: StaticCache, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """embeds (B, T, D) at cache slots `positions` (T,) -> the last position's logits (B, V); writes their keys
        and values."""
        decoder = self.decoder
        slots = cache.slots
        kept = (slots < cache.padding[:, :1]) | (slots >= cache.padding[:, 1:])  # (B, L): transformers' attention mask
        position_ids = (kept.long().cumsum(-1) * kept - 1).index_select(1, positions)  # (B, T), as OPT counts them
        hidden = embeds if decoder.project_in is None else decoder.project_in(embeds)
        hidden = hidden + F.embedding(position_ids + self.position_offset, decoder.embed_positions.weight)
        # (B, 1, T, L): each new token sees the cache up to itself, padded slots excepted
        mask = (slots[None] <= positions[:, None])[None, None] & kept[:, None, None]
        for index, layer in enumerate(decoder.layers):
            hidden = self._layer(layer, hidden, cache.keys[index], cache.values[index], positions, mask)
        if decoder.final_layer_norm is not None:
            hidden = decoder.final_layer_norm(hidden)
        if decoder.project_out is not None:
            hidden = decoder.project_out(hidden)
        return self.lm_head(hidden[:, -1])  # (B, V)

    def _layer(self, layer, hidden, keys, values, positions, mask):
        """One OPTDecoderLayer, as transformers computes it, with the cache written in place."""
        attention = layer.self_attn
        rows, length, _ = hidden.shape

        def heads(x):  # (B, T, D) -> (B, H, T, d)
            return x.view(rows, length, self.heads, self.head_dim).transpose(1, 2)

        def attend(hidden):
            query = heads(attention.q_proj(hidden) * self.scaling)  # OPT scales before the product, not in it
            keys.index_copy_(2, positions, heads(attention.k_proj(hidden)))
            values.index_copy_(2, positions, heads(attention.v_proj(hidden)))
            attended = F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=1.0)  # (B, H, T, d)
            return (attention.out_proj(attended.transpose(1, 2).reshape(rows, length, -1)),)

        hidden, _ = opt_layer(hidden, attend, layer.self_attn_layer_norm, layer.final_layer_norm, layer.fc1, layer.fc2,
                              layer.activation_fn, self.norm_before)
        return hidden

    @torch.no_grad()
    def decode_step(self, cache: StaticCache, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per row from the cache's static inputs: what a graph captures."""
        logits = self.forward(cache, self.decoder.embed_tokens(cache.input_ids), cache.position)
        return rank(logits, cache.bias, k)

    @torch.no_grad()
    def graph(self, cache: StaticCache, adapter: str | None, k: int) -> tuple[torch.cuda.CUDAGraph, tuple]:
        """The captured decode step for this cache, adapter and k (captured on first use)."""
        key = (adapter, k)
        if key not in cache.graphs:
            # The warm-up runs write the cache at the current position, as the replay that follows does again.
            stream = torch.cuda.Stream(device=self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(CAPTURE_WARMUP):
                    self.decode_step(cache, k)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # One pool for every graph: their outputs are read before the next replay, so sharing is safe.
            with torch.cuda.graph(graph, pool=self.pool):
                outputs = self.decode_step(cache, k)
            cache.graphs[key] = (graph, outputs)
        return cache.graphs[key]


def rank(logits: torch.Tensor, bias: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best tokens of each row as runtime/decoding.py ranks them: by log_softmax + bias, equal values lower id
    first (argmax and a stable sort both keep the first); their unbiased log-probs (B, k) and ids (B, k)."""
    log_probs = logits.float().log_softmax(-1)  # (B, V)
    ranked = log_probs + bias
    if k == 1:
        ids = ranked.argmax(-1, keepdim=True)
    else:
        ids = ranked.sort(dim=-1, descending=True, stable=True).indices[:, :k]
    return log_probs.gather(-1, ids), ids


class StaticStep:
    """A LanguageModelStep (runtime/decoding.py) over a StaticDecoder: `past` is the StaticCache."""

    def __init__(self, decoder: StaticDecoder, max_length: int, adapter: str | None):
        self.decoder, self.max_length, self.adapter = decoder, max_length, adapter
        self.vocab_size = decoder.vocab_size

    @torch.no_grad()
    def top_tokens(self, prefix_embeds: np.ndarray, input_ids: np.ndarray, past, log_prob_bias: np.ndarray,
                   k: int, padding: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, StaticCache]:
        decoder, rows = self.decoder, len(input_ids)
        cache = decoder.cache(rows, self.max_length) if past is None else past
        if past is None and padding is not None:  # constant for the call, and beams share their row's: set once
            cache.padding.copy_(torch.from_numpy(np.ascontiguousarray(padding, np.int64)[_padded_rows(rows, cache)]))
        if rows != cache.live_rows:
            raise ValueError(f"a step of {rows} rows on a cache of {cache.live_rows}: "
                             "every step of a call decodes the rows its first step started")
        length = prefix_embeds.shape[1] + input_ids.shape[1]
        if cache.length + length > cache.max_length:
            raise ValueError(f"the static KV cache holds {cache.max_length} tokens and is full ({cache.length}): "
                             "give the step a max_length of at least the prompt + BOS + max_new_tokens")
        bias = decoder.device_bias(log_prob_bias)
        if length == 1 and prefix_embeds.shape[1] == 0:
            cache.input_ids[:rows].copy_(torch.from_numpy(np.ascontiguousarray(input_ids, np.int64)))
            cache.position.fill_(cache.length)
            cache.bias.copy_(bias)
            if decoder.cuda_graphs:
                graph, (log_probs, ids) = decoder.graph(cache, self.adapter, k)
                graph.replay()
            else:
                log_probs, ids = decoder.decode_step(cache, k)
        else:  # the prompt: eager, once per call
            log_probs, ids = rank(self._prefill(cache, prefix_embeds, input_ids), bias, k)
        cache.length += length
        return log_probs[:rows].cpu().numpy(), ids[:rows].cpu().numpy(), cache

    def _prefill(self, cache: StaticCache, prefix_embeds: np.ndarray, input_ids: np.ndarray) -> torch.Tensor:
        decoder = self.decoder
        padding = _padded_rows(len(input_ids), cache)
        ids = torch.from_numpy(np.ascontiguousarray(input_ids[padding], np.int64)).to(decoder.device)
        embeds = decoder.decoder.embed_tokens(ids)  # (B, T, D)
        if prefix_embeds.shape[1]:
            prefix = torch.from_numpy(np.ascontiguousarray(prefix_embeds[padding], np.float32))
            embeds = torch.cat([prefix.to(decoder.device, decoder.dtype), embeds], dim=1)
        positions = torch.arange(cache.length, cache.length + embeds.shape[1], device=decoder.device)
        return decoder.forward(cache, embeds, positions)

    @torch.no_grad()
    def reorder(self, past: StaticCache, rows: np.ndarray) -> StaticCache:
        """Beam search's row selection, on the device and in place (a captured graph reads these addresses)."""
        order = np.arange(past.rows)
        order[: len(rows)] = rows
        index = torch.from_numpy(order).to(self.decoder.device)
        past.keys.copy_(past.keys.index_select(1, index))
        past.values.copy_(past.values.index_select(1, index))
        return past


def _padded_rows(rows: int, cache: StaticCache) -> np.ndarray:
    """Which caller row each of the cache's rows holds: its own, and row 0 for the rows padding adds."""
    return np.r_[np.arange(rows), np.zeros(cache.rows - rows, np.int64)]
