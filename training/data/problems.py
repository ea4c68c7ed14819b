"""Collects bad entries while a reader builds its index: each is logged as a warning naming the
file and entry, then skipped; a reader that keeps nothing raises instead of training on nothing."""

from __future__ import annotations

import logging
from pathlib import Path

from .samples import DataError

logger = logging.getLogger("training.data")


class ProblemLog:
    def __init__(self, dataset: str):
        self.dataset = dataset
        self.problems: list[str] = []

    def report(self, file: str | Path, entry: object, reason: str) -> None:
        message = f"{self.dataset}: skipping {file} entry {entry}: {reason}"
        logger.warning(message)
        self.problems.append(message)

    def require_some(self, kept: int, what: str) -> None:
        """Raise when no entry survived; the error lists the first problems to start from."""
        if kept:
            if self.problems:
                logger.warning("%s: kept %d %s, skipped %d bad entries", self.dataset, kept, what, len(self.problems))
            return
        shown = "\n  ".join(self.problems[:5]) or "(the input lists no entries)"
        raise DataError(f"{self.dataset}: no usable {what} remain after {len(self.problems)} problems:\n  {shown}\n"
                        "fix the paths/files above or point the reader at the right directory")
