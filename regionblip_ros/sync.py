"""Matching region arrays to the frames they were computed on, by header stamp.

A detector publishes its regions some time after the image (or cloud) they refer to, with that frame's stamp
in their header. FrameBuffer keeps the last few frames of one sensor ordered by stamp and hands back the one
a region array names: the frame with exactly its stamp, or else the nearest one within a slop.
"""

import bisect
from typing import Generic, TypeVar

Frame = TypeVar("Frame")


def stamp_to_ns(stamp) -> int:
    """A builtin_interfaces/Time as integer nanoseconds: exact, so that equal stamps compare equal."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class FrameBuffer(Generic[Frame]):
    """A bounded ring of frames ordered by stamp (ns): the oldest stamp is evicted first.

    Frames may arrive in any order; they are kept sorted by stamp, so a late frame is still found. A frame
    with a stamp already buffered replaces the earlier one.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"frame buffer capacity is {capacity}: keep at least 1 frame (frame_buffer >= 1)")
        self.capacity = capacity
        self._stamps: list[int] = []
        self._frames: list[Frame] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def stamps(self) -> list[int]:
        """Buffered stamps in ns, oldest first."""
        return list(self._stamps)

    def add(self, stamp_ns: int, frame: Frame) -> None:
        index = bisect.bisect_left(self._stamps, stamp_ns)
        if index < len(self._stamps) and self._stamps[index] == stamp_ns:
            self._frames[index] = frame
            return
        self._stamps.insert(index, stamp_ns)
        self._frames.insert(index, frame)
        if len(self._stamps) > self.capacity:
            del self._stamps[0], self._frames[0]

    def match(self, stamp_ns: int, slop_ns: int) -> Frame | None:
        """The frame with stamp `stamp_ns`, else the nearest within `slop_ns` (the older on a tie), else None."""
        index = bisect.bisect_left(self._stamps, stamp_ns)
        candidates = [i for i in (index - 1, index) if 0 <= i < len(self._stamps)]
        if not candidates:
            return None
        nearest = min(candidates, key=lambda i: abs(self._stamps[i] - stamp_ns))
        if abs(self._stamps[nearest] - stamp_ns) > slop_ns:
            return None
        return self._frames[nearest]
