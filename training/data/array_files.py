"""Loading numpy array files safely: never with pickle, always with a message naming the file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .samples import DataError

_LOAD_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def load_xyz(path: Path, key: str | None = None, mmap: bool = False) -> np.ndarray:
    """(N, >=3) array from `path` (.npy, or .npz member `key`) with allow_pickle=False.
    Raises DataError saying what is wrong with the file."""
    try:
        if key is None:
            array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        else:
            with np.load(path, allow_pickle=False) as archive:
                array = archive[key]
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except _LOAD_ERRORS as error:
        raise DataError(f"{path} is not a readable numpy file{f' with key {key!r}' if key else ''}: "
                        f"{type(error).__name__}: {error}") from None
    if array.ndim != 2 or array.shape[1] < 3 or array.shape[0] == 0:
        raise DataError(f"{path} holds an array of shape {array.shape}, expected (N, 3+) points")
    if not mmap and not np.isfinite(array[:, :3]).all():
        raise DataError(f"{path} holds NaN or infinite coordinates")
    return array
