"""TensorRT optimization profiles for a bundle's graphs, derived from its manifest.

Every dynamic axis of every graph input gets a (min, opt, max) size:

  batch, frames   1 .. --max-batch frames (images, scenes or objects) per call; opt 1
  regions         1 .. --max-regions per call; opt min(4, max)
  llm batch       1 .. max(--max-batch, --max-regions) x num_beams rows (beams decode as rows);
                  opt 4 x num_beams
  prefix          0 .. num_query_tokens: the soft prompt in prefill, 0 in every decode step
  tokens          1 .. 1 + prompt tokens: BOS and the longest text prompt of the call (left-padded) in
                  prefill, one token per decode step; opt 1. Prompt tokens: contract/generation.py's
                  prompt_token_limit (MAX_PROMPT_TOKENS where the model's positions allow), 0 for an llm
                  graph without the padding input (exported before prompts: it takes none)
  past            0 .. max_sequence - 1: empty in prefill, the cache so far in decode;
                  max_sequence = num_query_tokens + 1 (BOS) + prompt tokens + max_new_tokens; opt mid-decode
  num_points      object_num_points .. scene_num_points (preprocess resamples to exactly these); opt scene
  image_tokens    (image_size / patch_size)^2 + 1; the model fixes it

The llm graph has ONE profile spanning prefill and decode. TensorRT accepts zero-size dimensions
(empty tensors) in a profile; a second profile would mean a second execution context (or a
profile switch per call) and a second tactic search at build time, while prefill runs once per
call against up to max_new_tokens decode steps, so opt is a decode step. `checks` are the shapes the build verifies against ONNX Runtime:
opt and max for every graph, and for the llm both extremes of prefill (past 0) and decode (prefix 0).
"""
from dataclasses import dataclass, field

import numpy as np

from contract.generation import prompt_token_limit
from contract.manifest import Manifest

OPT_REGIONS = 4  # regions a detector typically sends per frame


@dataclass(frozen=True)
class Limits:
    max_batch: int = 8
    max_regions: int = 32
    max_new_tokens: int | None = None  # None: the bundle's generation default
    num_beams: int | None = None  # None: the bundle's generation default

    def __post_init__(self):
        for name in ("max_batch", "max_regions", "max_new_tokens", "num_beams"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} is {value}: it must be at least 1")


@dataclass
class Profile:
    axes: dict[str, tuple[int, int, int]]  # axis name -> (min, opt, max)
    shapes: dict[str, dict[str, list[int]]]  # input name -> {"min": shape, "opt": shape, "max": shape}
    checks: list[dict[str, int]] = field(default_factory=list)  # axis sizes checked against ONNX Runtime

    def to_json(self) -> dict:
        return self.shapes


def prompt_tokens(manifest: Manifest, limits: Limits) -> int:
    """The most text-prompt tokens the llm profile takes: none for a graph that cannot pad prompts."""
    if "padding" not in manifest.graphs["llm"].input_names:
        return 0
    model = manifest.model
    return prompt_token_limit(model["num_query_tokens"], model["text"]["max_position_embeddings"],
                              limits.max_new_tokens or manifest.generation.max_new_tokens)


def max_sequence(manifest: Manifest, limits: Limits) -> int:
    """Soft prompt + BOS + text prompt + new tokens: the longest sequence the llm graph sees."""
    model = manifest.model
    new_tokens = limits.max_new_tokens or manifest.generation.max_new_tokens
    longest = model["num_query_tokens"] + 1 + new_tokens
    positions = model["text"]["max_position_embeddings"]
    if longest > positions:
        raise ValueError(f"num_query_tokens + 1 + max_new_tokens = {longest} exceeds the model's "
                         f"{positions} positions: lower --max-new-tokens")
    return longest + prompt_tokens(manifest, limits)


def axis_ranges(manifest: Manifest, graph: str, limits: Limits) -> dict[str, tuple[int, int, int]]:
    """(min, opt, max) for every axis name the graph `graph` may use."""
    model, preprocess = manifest.model, manifest.preprocess
    queries = model["num_query_tokens"]
    image_tokens = (preprocess.image_size // model["vision"]["patch_size"]) ** 2 + 1
    points = sorted({preprocess.object_num_points, preprocess.scene_num_points})
    ranges = {"batch": (1, 1, limits.max_batch), "frames": (1, 1, limits.max_batch),
              "regions": (1, min(OPT_REGIONS, limits.max_regions), limits.max_regions),
              "image_tokens": (image_tokens,) * 3, "num_points": (points[0], points[-1], points[-1])}
    if graph == "llm":
        beams = limits.num_beams or manifest.generation.num_beams
        rows = max(limits.max_batch, limits.max_regions) * beams
        longest = max_sequence(manifest, limits)
        ranges.update(batch=(1, min(OPT_REGIONS * beams, rows), rows), prefix=(0, 0, queries),
                      tokens=(1, 1, 1 + prompt_tokens(manifest, limits)),
                      past=(0, queries + 1 + (longest - queries - 1) // 2, longest - 1))
    return ranges


def graph_profile(manifest: Manifest, graph: str, limits: Limits) -> Profile:
    ranges = axis_ranges(manifest, graph, limits)
    inputs = manifest.graphs[graph].inputs
    used = {size for spec in inputs for size in spec.shape if isinstance(size, str)}
    unknown = sorted(used - set(ranges))
    if unknown:
        raise ValueError(f"graph {graph} has dynamic axes {unknown} that export/trt_profiles.py has no range for: "
                         "add them to axis_ranges")
    axes = {name: ranges[name] for name in sorted(used)}
    shapes = {spec.name: {point: [size if isinstance(size, int) else axes[size][i] for size in spec.shape]
                             for i, point in enumerate(("min", "opt", "max"))} for spec in inputs}
    return Profile(axes, shapes, _checks(graph, axes))


def _checks(graph: str, axes: dict) -> list[dict[str, int]]:
    opt = {name: r[1] for name, r in axes.items()}
    top = {name: r[2] for name, r in axes.items()}
    if graph != "llm":
        return [opt, top]
    prefill = {**top, "prefix": axes["prefix"][2], "past": 0}
    decode = {**top, "prefix": 0, "tokens": 1}
    return [opt, prefill, decode]


def derive_profiles(manifest: Manifest, limits: Limits) -> dict[str, Profile]:
    """A profile for every graph of the bundle."""
    return {name: graph_profile(manifest, name, limits) for name in manifest.graphs}


def random_feeds(manifest: Manifest, graph: str, sizes: dict[str, int], rng: np.random.Generator) -> dict:
    """Valid random inputs for `graph` with its dynamic axes at `sizes` (ids in range, boxes well formed)."""
    feeds = {}
    vocab = manifest.model["text"]["vocab_size"]
    for spec in manifest.graphs[graph].inputs:
        shape = [sizes[s] if isinstance(s, str) else s for s in spec.shape]
        name = spec.name
        if name == "input_ids":
            value = rng.integers(0, vocab, shape)
        elif name == "frame_index":
            value = rng.integers(0, sizes["frames"], shape)
        elif name == "adapter_ids":
            value = rng.integers(0, len(manifest.llm.adapters) + 1, shape)
        elif name == "padding":
            value = random_padding(shape[0], sizes["past"] + sizes["prefix"] + sizes["tokens"], rng)
        elif name == "boxes" and shape[1] == 4:
            corners = rng.random(shape)
            value = np.concatenate([corners[:, :2] * 0.5, 0.5 + corners[:, 2:] * 0.5], 1)
        else:
            value = rng.standard_normal(shape)
        feeds[name] = value.astype(spec.dtype)
    return feeds


def random_padding(rows: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """A valid random llm `padding` input (rows, 2) for a sequence of `length` cache positions: each row's padded
    range [start, end) ends before the last position, which therefore always has a key to attend."""
    start = rng.integers(0, length, rows)
    end = start + rng.integers(0, length - start)
    return np.stack([start, end], axis=1).astype(np.int64)
