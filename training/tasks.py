"""Training tasks: a dataset of one modality, read in a fixed order, turned into the model's keyword arguments.

The order is a pure function of (seed, task, epoch): batch n of a task on rank r of W holds the samples at positions
n*B*W + r*B ... + B-1 of the concatenated per-epoch permutations. So the data position of a run is just the number of
batches each task has contributed, and W processes read disjoint samples.
"""

from __future__ import annotations

import numpy as np
import torch

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
                                     max_objects=task.max_objects)
    num_points = model_config.object_num_points if task.modality == POINTCLOUD else model_config.scene_num_points
    return SyntheticPointDataset(task.modality, split=split, length=task.length, num_points=num_points,
                                 max_objects=task.max_objects)


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


def tokenize_captions(captions: list[str], tokenizer) -> dict:
    """BOS + caption + "\\n", right-padded: the LM targets of the release (labels are -100 on padding)."""
    encoded = tokenizer([c + "\n" for c in captions], padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def model_inputs(batch: dict, tokenizer) -> dict:
    """Keyword arguments for RegionBLIP.forward."""
    return {"modality": batch["modality"], **tokenize_captions(batch["captions"], tokenizer), **frame_inputs(batch)}


class TaskStream:
    """Batch n of one task for one rank, recomputable at any time (what makes resuming exact)."""

    def __init__(self, task: TaskConfig, task_index: int, *, seed: int, batch_size: int, model_config: RegionBLIPConfig,
                 rank: int = 0, world_size: int = 1):
        self.task, self.task_index = task, task_index
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
            return {"modality": "text", **tokenize_captions(self.samples(n), tokenizer)}
        samples = self.samples(n)
        collated = collate(samples, self.image_size)
        if self.task.modality == PATCH_MODALITY:
            targets = patch_targets([s.attributes["objects"] for s in samples], [s.image.shape[1] for s in samples],
                                    self.patch_grid)
            return {"modality": PATCH_MODALITY, "pixel_values": collated["pixel_values"], "patch_targets": targets}
        return model_inputs(collated, tokenizer)


def to_device(inputs: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
