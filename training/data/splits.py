"""Seeds for synthetic data: every sample is generated from (split, modality, index), so the
train and eval splits never share a scene seed and any sample can be regenerated on its own."""

from __future__ import annotations

import zlib

import numpy as np

SPLITS = ("train", "eval")


def sample_rng(split: str, modality: str, index: int) -> np.random.Generator:
    """Independent stream for one sample. Different splits feed different entropy words to numpy's
    SeedSequence, so train and eval streams are disjoint by construction."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {SPLITS}")
    if index < 0:
        raise IndexError(f"sample index must be >= 0, got {index}")
    return np.random.default_rng([SPLITS.index(split), zlib.crc32(modality.encode()), int(index)])
