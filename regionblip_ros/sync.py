"""Matching region arrays to the frames they were computed on, by header stamp.

A detector publishes its regions some time after the image (or cloud) they refer to, with that frame's stamp
in their header. FrameBuffer keeps the last few frames of one sensor ordered by stamp and hands back the one
a region array names: the frame with exactly its stamp, or else the nearest one within a slop.

Clocks jump: a bag loops, a simulator restarts, a publisher's clock is corrected. A frame stamped more than
`jump_ns` before the newest buffered one is taken for a jump back and starts the buffer afresh, so that the
frames after a jump are matched at once instead of being evicted as the oldest.
"""

import bisect
import enum
from typing import Generic, TypeVar

Frame = TypeVar("Frame")


def stamp_to_ns(stamp) -> int:
    """A builtin_interfaces/Time as integer nanoseconds: exact, so that equal stamps compare equal."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Added(enum.Enum):
    """What FrameBuffer.add did with a frame."""

    KEPT = "kept"              # buffered (the oldest frame may have been evicted to make room)
    REPLACED = "replaced"      # a frame with the same stamp was buffered; this one took its place
    TOO_OLD = "too_old"        # older than every frame of a full buffer, within jump_ns: not buffered
    RESET = "reset"            # a clock jump back: the buffer was emptied and now holds only this frame


class FrameBuffer(Generic[Frame]):
    """A bounded ring of frames ordered by stamp (ns): the oldest stamp is evicted first.

    Frames may arrive in any order; they are kept sorted by stamp, so a late frame is still found. A frame
    with a stamp already buffered replaces the earlier one. A frame more than jump_ns older than the newest
    means the clock jumped back: the buffer restarts from it.
    """

    def __init__(self, capacity: int, jump_ns: int):
        if capacity < 1:
            raise ValueError(f"frame buffer capacity is {capacity}: keep at least 1 frame (frame_buffer >= 1)")
        if jump_ns <= 0:
            raise ValueError(f"clock jump threshold is {jump_ns} ns: it must be positive (clock_jump > 0)")
        self.capacity, self.jump_ns = capacity, jump_ns
        self._stamps: list[int] = []
        self._frames: list[Frame] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def stamps(self) -> list[int]:
        """Buffered stamps in ns, oldest first."""
        return list(self._stamps)

    @property
    def newest(self) -> int | None:
        """The newest buffered stamp in ns, or None when empty."""
        return self._stamps[-1] if self._stamps else None

    def add(self, stamp_ns: int, frame: Frame) -> Added:
        if self._stamps and stamp_ns < self._stamps[-1] - self.jump_ns:
            self._stamps, self._frames = [stamp_ns], [frame]
            return Added.RESET
        index = bisect.bisect_left(self._stamps, stamp_ns)
        if index < len(self._stamps) and self._stamps[index] == stamp_ns:
            self._frames[index] = frame
            return Added.REPLACED
        if index == 0 and len(self._stamps) == self.capacity:
            return Added.TOO_OLD  # it would be the one evicted
        self._stamps.insert(index, stamp_ns)
        self._frames.insert(index, frame)
        if len(self._stamps) > self.capacity:
            del self._stamps[0], self._frames[0]
        return Added.KEPT

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
