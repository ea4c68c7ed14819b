"""Training tasks: a dataset of one modality, read in a fixed order, turned into the model's keyword arguments.

The order is a pure function of (seed, task, epoch): batch n of a task on rank r of W holds the samples at positions
n*B*W + r*B ... + B-1 of the concatenated per-epoch permutations. So the data position of a run is just the number of
batches each task has contributed, and W processes read disjoint samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from contract.modalities import IMAGE, IMAGE_REGION, POINTCLOUD, POINTCLOUD_REGION, REGION_MODALITIES

from .config import RegionBLIPConfig
from .data import (Cap3DDataset, ScanReferDataset, SyntheticImageDataset, SyntheticPointDataset, collate_images,
                   collate_points, load_refcoco, load_region_json)
from .trainer_config import TaskConfig
from .vision_pretraining import MODALITY as PATCH_MODALITY
from .vision_pretraining import patch_targets


class SyntheticCaptions:
    """Caption text of all four synthetic modalities, interleaved (item i: modality i % 4), for the `text` task: the
    small LLM's stand-in for OPT's text pre-training. Each item is a caption twice, c + "\\n" + c: the first teaches
    language, the second teaches reading words from the context, as OPT can. Without that the frozen LLM cannot be
    steered by a soft prompt to words it never saw after a prompt in stage 1 (the point shapes): even trained
    per-class prompt vectors stayed at the caption prior for 150 steps; after 300 steps of this task they reached
    0.07 loss."""

    modality = "text"

    def __init__(self, split: str, length: int, max_objects: int):
        self.length = length
        self.sources = [SyntheticImageDataset(IMAGE, split, length, max_objects=max_objects),
                        SyntheticImageDataset(IMAGE_REGION, split, length, max_objects=max_objects),
                        SyntheticPointDataset(POINTCLOUD, split, length, max_objects=max_objects),
                        SyntheticPointDataset(POINTCLOUD_REGION, split, length, max_objects=max_objects)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> str:
        caption = self.sources[index % 4].caption(index // 4)
        return f"{caption}\n{caption}"


def real_dataset(task: TaskConfig, model_config: RegionBLIPConfig, seed: int = 0):
    """A real source's reader (TaskConfig.paths checked by trainer_config); bad entries are reported and skipped."""
    paths = task.paths
    if task.data == "refcoco":
        return load_refcoco(paths["instances_json"], paths["refs_json"], paths["image_dir"], split=task.split)
    if task.data == "region_json":
        return load_region_json(paths["path"], paths["image_root"])
    if task.data == "cap3d":
        return Cap3DDataset(paths["captions_file"], paths["points_dir"], augment=task.augment,
                            num_points=model_config.object_num_points, seed=seed)
    if task.data == "scanrefer":
        return ScanReferDataset(paths["scanrefer_json"], paths["scannet_dir"], augment=task.augment,
                                num_points=model_config.scene_num_points, seed=seed)
    raise ValueError(f"unknown data source {task.data!r}")


def make_dataset(task: TaskConfig, split: str, model_config: RegionBLIPConfig, seed: int = 0):
    """Point clouds get the model's point counts (object_num_points, scene_num_points), which the runtime uses too.
    `split` picks the synthetic split ("train" or the held-out "eval"); a real source reads its own files."""
    if task.data != "synthetic":
        return real_dataset(task, model_config, seed)
    if task.modality == "text":
        return SyntheticCaptions(split, task.length, task.max_objects)
    if task.modality in (IMAGE, IMAGE_REGION, PATCH_MODALITY):
        modality = IMAGE_REGION if task.modality == IMAGE_REGION else IMAGE
        return SyntheticImageDataset(modality, split=split, length=task.length, image_size=task.image_size,
                                     max_objects=task.max_objects, variation=task.variation)
    num_points = model_config.object_num_points if task.modality == POINTCLOUD else model_config.scene_num_points
    return SyntheticPointDataset(task.modality, split=split, length=task.length, num_points=num_points,
                                 max_objects=task.max_objects, variation=task.variation)


def collate(samples: list, image_size: int) -> dict:
    """Samples of one modality -> collated tensors (see data.batching), boxes under 'boxes' for every region kind."""
    if samples and hasattr(samples[0], "image"):
        return collate_images(samples, image_size)
    batch = collate_points(samples)
    if "corners" in batch:
        batch["boxes"] = batch.pop("corners")
    return batch


def frame_inputs(batch: dict) -> dict:
    """The collated batch's model inputs other than text: pixel_values or points, and boxes for regions."""
    inputs = {key: batch[key] for key in ("pixel_values", "points") if key in batch}
    if batch["modality"] in REGION_MODALITIES:
        inputs["boxes"] = batch["boxes"]
    return inputs


@dataclass(frozen=True)
class CaptionTokens:
    """How a stage turns captions into tokens. `max_tokens`: truncation, BOS included (the release: 32, on both the
    LLM's and the Q-Former's side). `itc`, `itg`: the Q-Former's losses, which read the captions in its own tokens:
    `qformer_tokenizer`'s (the release: bert-base-uncased with [DEC] as BOS), or with None the LLM's very ids, whose
    BOS stands in for [CLS] and [DEC] and whose "\\n" ends a caption as [SEP] does."""
    max_tokens: int | None = None
    itc: bool = False
    itg: bool = False
    qformer_tokenizer: object | None = None


def tokenize_captions(captions: list[str], tokenizer, max_tokens: int | None = None) -> dict:
    """BOS + caption + "\\n", right-padded: the LM targets of the release (labels are -100 on padding). Truncated
    to `max_tokens` as the release truncates: a caption cut short loses its "\\n" too."""
    encoded = tokenizer([c + "\n" for c in captions], padding=True, truncation=max_tokens is not None,
                        max_length=max_tokens, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def tokenize_qformer_captions(captions: list[str], tokenizer, max_tokens: int | None = None) -> dict:
    """[CLS] caption [SEP] in the Q-Former's tokenizer, right-padded and truncated (the release: 32 tokens)."""
    encoded = tokenizer(captions, padding=True, truncation=max_tokens is not None, max_length=max_tokens,
                        return_tensors="pt")
    return {"qformer_input_ids": encoded["input_ids"], "qformer_attention_mask": encoded["attention_mask"]}


def model_inputs(batch: dict, tokenizer, captions: CaptionTokens = CaptionTokens()) -> dict:
    """Keyword arguments for RegionBLIP.forward."""
    text = tokenize_captions(batch["captions"], tokenizer, captions.max_tokens)
    inputs = {"modality": batch["modality"], **text, **frame_inputs(batch)}
    if captions.itc or captions.itg:
        if captions.qformer_tokenizer is None:
            inputs |= {"qformer_input_ids": text["input_ids"], "qformer_attention_mask": text["attention_mask"]}
        else:
            inputs |= tokenize_qformer_captions(batch["captions"], captions.qformer_tokenizer, captions.max_tokens)
        inputs |= {"itc": captions.itc, "itg": captions.itg}
    return inputs


def load_qformer_tokenizer(directory: str | Path):
    """The Q-Former's tokenizer from a local directory (bert-base-uncased's files), with [DEC] added as BOS, as the
    release adds it; nothing is downloaded."""
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"qformer_tokenizer {directory} is not a directory: give one holding a BERT tokenizer "
                                "(vocab.txt or tokenizer.json, e.g. bert-base-uncased's)")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), truncation_side="right")
    if tokenizer.bos_token is None:
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def check_qformer_tokenizer(tokenizer, model_config: RegionBLIPConfig) -> None:
    """ValueError unless the model's Q-Former text side reads this tokenizer's ids: vocabulary and BOS ([DEC])."""
    problems = []
    if not model_config.qformer_text:
        problems.append("the model has no Q-Former text side (qformer_text is false)")
    if len(tokenizer) > model_config.qformer_text_vocab_size:
        problems.append(f"qformer_text_vocab_size {model_config.qformer_text_vocab_size} < the tokenizer's "
                        f"{len(tokenizer)} tokens")
    if tokenizer.bos_token_id != model_config.qformer_text_bos_token_id:
        problems.append(f"qformer_text_bos_token_id {model_config.qformer_text_bos_token_id} != the tokenizer's "
                        f"BOS {tokenizer.bos_token_id}")
    if problems:
        raise ValueError("ITC / ITG cannot run: " + "; ".join(problems) + ": start from a model made for this "
                         "tokenizer (RegionBLIP.from_blip2(..., qformer_text=True, bert=...), or these fields in "
                         "model.overrides)")


class TaskStream:
    """Batch n of one task for one rank, recomputable at any time (what makes resuming exact)."""

    def __init__(self, task: TaskConfig, task_index: int, *, seed: int, batch_size: int, model_config: RegionBLIPConfig,
                 rank: int = 0, world_size: int = 1, captions: CaptionTokens = CaptionTokens()):
        self.task, self.task_index, self.captions = task, task_index, captions
        self.dataset = make_dataset(task, "train", model_config, seed)
        self.seed, self.batch_size, self.image_size = seed, batch_size, model_config.image_size
        self.patch_grid = model_config.patch_grid
        self.rank, self.world_size = rank, world_size
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, self.task_index, epoch])
                            .permutation(len(self.dataset))}
        return self._orders[epoch]

    def _positions(self, n: int) -> list[tuple[int, int]]:
        """(epoch, dataset index) of each sample of batch n."""
        start = (n * self.world_size + self.rank) * self.batch_size
        epochs = [divmod(p, len(self.dataset)) for p in range(start, start + self.batch_size)]
        return [(epoch, int(self._order(epoch)[offset])) for epoch, offset in epochs]

    def indices(self, n: int) -> list[int]:
        return [index for _, index in self._positions(n)]

    def samples(self, n: int) -> list:
        """Batch n's samples; a dataset that augments (set_epoch) draws each with the epoch it belongs to."""
        samples = []
        for epoch, index in self._positions(n):
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            samples.append(self.dataset[index])
        return samples

    def batch(self, n: int, tokenizer) -> dict:
        if self.task.modality == "text":
            return {"modality": "text", **tokenize_captions(self.samples(n), tokenizer, self.captions.max_tokens)}
        samples = self.samples(n)
        collated = collate(samples, self.image_size)
        if self.task.modality == PATCH_MODALITY:
            targets = patch_targets([s.attributes["objects"] for s in samples], [s.image.shape[:2] for s in samples],
                                    self.patch_grid)
            return {"modality": PATCH_MODALITY, "pixel_values": collated["pixel_values"], "patch_targets": targets}
        return model_inputs(collated, tokenizer, self.captions)


def to_device(inputs: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
