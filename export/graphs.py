"""The bundle's graphs as torch modules, each with named tensor inputs and outputs.

vision          pixel_values (B, 3, S, S)                            -> image_features (B, L, W)
point_encoder   points (B, N, 3)                                     -> point_features (B, 1 + G, W)
qformer_<m>     features (F, L, W) [, boxes (R, k), frame_index (R,)] -> soft_prompt (R, Q, D)
                [, points (F, N, 3): point regions with point_region_crop]
llm             prefix_embeds, input_ids, log_prob_bias (V,), padding (B, 2) [, adapter_ids], past_*
                                                                     -> logits (B, V), top_log_probs (B, K),
                                                                        top_ids (B, K), present_*

The point encoder keeps FPS + kNN grouping inside the graph (see export/README.md for the
measurement behind that choice). Q-Former graphs carry their modality's LoRA merged into the
weights; the whole-image and whole-object graphs take one row per frame. PaFE's options
(training/pafe.py) live in the region graphs: the image-region box mark is computed from the boxes, and
a point-region crop runs Point-BERT on each region's own points inside qformer_pointcloud_region.
"""
from dataclasses import dataclass

import torch
from torch import nn

from contract.manifest import TensorSpec
from contract.modalities import BOX_DIMS, BY_NAME, POINT_MODALITIES, REGION_MODALITIES
from export.lora import merged_copy
from export.llm import TOP_K, ExportableOPT, top_tokens
from export.qformer import FramewiseRegionPrompt
from training.modeling_regionblip import RegionBLIP
from training.region_prompt import RegionPrompt


@dataclass
class Graph:
    name: str
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example: tuple  # example inputs for tracing, in input order

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {spec.name: spec.dynamic_axes for spec in self.inputs + self.outputs}


class VisionEncoder(nn.Module):
    def __init__(self, model: RegionBLIP):
        super().__init__()
        self.model = model  # the graph keeps only the weights image_features uses

    def forward(self, pixel_values):
        return self.model.image_features(pixel_values)  # (B, L, W)


class PointEncoder(nn.Module):
    def __init__(self, model: RegionBLIP):
        super().__init__()
        self.model = model  # the graph keeps only the weights point_features uses

    def forward(self, points):
        return self.model.point_features(points)  # (B, 1 + G, W)


class QFormerPrompt(nn.Module):
    """Frame features (+ boxes) -> the modality's soft prompt: the model's RegionPrompt, with its LoRA merged in;
    for regions, its cross-attention keys and values projected once per frame (export/qformer.py)."""

    def __init__(self, model: RegionBLIP, modality: str):
        super().__init__()
        adapter = BY_NAME[modality].adapter
        prompt = RegionPrompt(model, modality, qformer=merged_copy(model.qformer_for(modality), adapter))
        self.prompt = FramewiseRegionPrompt(prompt) if modality in REGION_MODALITIES else prompt

    def forward(self, features, boxes=None, frame_index=None, points=None):
        return self.prompt(features, boxes, frame_index, points)[1]  # (R, Q, D)


class LanguageModel(nn.Module):
    """ExportableOPT with flat positional arguments, as ONNX export wants them, and the next tokens ranked in the
    graph (export/llm.py top_tokens), so that the decoder reads K candidates per row instead of the logits."""

    def __init__(self, model: RegionBLIP, adapters: list[str], stacked: bool):
        super().__init__()
        self.opt = ExportableOPT(model.language_model, adapters, stacked)
        self.stacked = self.opt.stacked

    def forward(self, prefix_embeds, input_ids, log_prob_bias, padding, *rest):
        adapter_ids, past = (rest[0], rest[1:]) if self.stacked else (None, rest)
        logits, present = self.opt(prefix_embeds, input_ids, list(past), adapter_ids, padding)
        top_log_probs, top_ids = top_tokens(logits, log_prob_bias)
        return (logits, top_log_probs, top_ids, *present)


def _features_spec(name: str, model: RegionBLIP, tokens, rows: str = "batch") -> TensorSpec:
    return TensorSpec(name, (rows, tokens, model.config.qformer_config().encoder_hidden_size), "float32")


def graph_names(modalities: list[str]) -> list[str]:
    """The graphs a bundle for `modalities` needs, in export order."""
    names = []
    if any(m not in POINT_MODALITIES for m in modalities):
        names.append("vision")
    if any(m in POINT_MODALITIES for m in modalities):
        names.append("point_encoder")
    return names + [f"qformer_{m}" for m in modalities] + ["llm"]


def weight_prefixes(name: str, config) -> tuple[str, ...]:
    """The prefixes of the RegionBLIP state-dict keys that graph `name` reads: all the exporter loads to build it.
    A prefix missing here fails the export with the weight's name (export/external_data.py)."""
    if name == "vision":
        return ("vision_model.",)
    if name == "point_encoder":
        return ("point_encoder.", "point_adapter.")
    if name == "llm":
        return ("language_model.",)
    modality = name.removeprefix("qformer_")
    if modality not in BY_NAME:
        raise ValueError(f"unknown graph {name!r}")
    prefixes = ("qformer_pc." if modality in POINT_MODALITIES else "qformer.", f"query_tokens.{modality}",
                f"language_projection.{modality}.")
    if modality in REGION_MODALITIES:
        prefixes += (f"region_position_embedding.{modality}.",)
    if modality == "image_region" and config.region_feature_mask:
        prefixes += ("region_feature_embedding",)
    if modality == "pointcloud_region" and config.point_region_crop:
        prefixes += ("point_encoder.", "point_adapter.")
    return prefixes


def build_graph(model: RegionBLIP, name: str, modalities: list[str]) -> Graph:
    """Graph `name` of a bundle for `modalities`, ready to export (in eval mode). Only the weights of
    weight_prefixes(name) need to be loaded in `model`."""
    config = model.config
    size, width = config.image_size, config.qformer_config().encoder_hidden_size
    queries, prompt_width = config.num_query_tokens, config.text_config().word_embed_proj_dim
    if name == "vision":
        graph = Graph("vision", VisionEncoder(model),
                      [TensorSpec("pixel_values", ("batch", 3, size, size), "float32")],
                      [_features_spec("image_features", model, "image_tokens")],
                      (torch.randn(2, 3, size, size),))
    elif name == "point_encoder":
        num_points = max(64, 2 * config.point_num_group)
        graph = Graph("point_encoder", PointEncoder(model),
                      [TensorSpec("points", ("batch", "num_points", 3), "float32")],
                      [_features_spec("point_features", model, config.point_num_group + 1)],
                      (torch.randn(2, num_points, 3),))
    elif name == "llm":
        graph = _llm_graph(model, modalities)
    else:
        modality = name.removeprefix("qformer_")
        tokens = config.point_num_group + 1 if modality in POINT_MODALITIES else "image_tokens"
        frames = "frames" if modality in REGION_MODALITIES else "batch"
        inputs = [_features_spec("features", model, tokens, rows=frames)]
        example_tokens = tokens if isinstance(tokens, int) else config.patch_grid ** 2 + 1
        example = [torch.randn(2, example_tokens, width)]
        if modality in REGION_MODALITIES:
            inputs += [TensorSpec("boxes", ("regions", BOX_DIMS[modality]), "float32"),
                       TensorSpec("frame_index", ("regions",), "int64")]
            example += [torch.rand(3, BOX_DIMS[modality]), torch.tensor([0, 1, 1])]
        if modality == "pointcloud_region" and config.point_region_crop:
            inputs.append(TensorSpec("points", ("frames", "num_points", 3), "float32"))
            example.append(torch.randn(2, max(64, 2 * config.point_region_crop), 3))
        rows = "regions" if modality in REGION_MODALITIES else "batch"
        graph = Graph(name, QFormerPrompt(model, modality), inputs,
                      [TensorSpec("soft_prompt", (rows, queries, prompt_width), "float32")], tuple(example))
    graph.module.eval()
    return graph


def build_graphs(model: RegionBLIP, modalities: list[str]) -> list[Graph]:
    """Every graph a bundle for `modalities` needs, from one fully loaded model."""
    return [build_graph(model, name, modalities) for name in graph_names(modalities)]


def llm_adapters(modalities: list[str]) -> list[str]:
    """The LoRA adapters the LLM graph carries: the non-image modalities, in bundle order."""
    return [m for m in modalities if BY_NAME[m].adapter is not None]


def _llm_graph(model: RegionBLIP, modalities: list[str]) -> Graph:
    config = model.config.text_config()
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    adapters = llm_adapters(modalities)
    module = LanguageModel(model, adapters, stacked=len(modalities) > 1)
    inputs = [TensorSpec("prefix_embeds", ("batch", "prefix", config.word_embed_proj_dim), "float32"),
              TensorSpec("input_ids", ("batch", "tokens"), "int64"),
              TensorSpec("log_prob_bias", (config.vocab_size,), "float32"),
              TensorSpec("padding", ("batch", 2), "int64")]
    # Row 1's text is one token shorter than row 0's: a pad at slot 7, after the past (4) and the soft prompt (3).
    example = [torch.randn(2, 3, config.word_embed_proj_dim), torch.tensor([[2, 5], [1, 2]]),
               torch.zeros(config.vocab_size), torch.tensor([[7, 7], [7, 8]])]
    if module.stacked:
        inputs.append(TensorSpec("adapter_ids", ("batch",), "int64"))
        example.append(torch.tensor([0, len(module.opt.adapters)]))
    past, present = [], []
    for layer in range(config.num_hidden_layers):
        for kind in ("key", "value"):
            past.append(TensorSpec(f"past_{kind}_{layer}", ("batch", heads, "past", head_dim), "float32"))
            present.append(TensorSpec(f"present_{kind}_{layer}", ("batch", heads, "total", head_dim), "float32"))
    example += [torch.randn(2, heads, 4, head_dim) for _ in past]
    top_k = min(TOP_K, config.vocab_size)
    outputs = [TensorSpec("logits", ("batch", config.vocab_size), "float32"),
               TensorSpec("top_log_probs", ("batch", top_k), "float32"),
               TensorSpec("top_ids", ("batch", top_k), "int64")] + present
    return Graph("llm", module, inputs + past, outputs, tuple(example))
