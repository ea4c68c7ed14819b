"""The node's description cache: a tracked region whose box has barely moved keeps its description for a while.

Detectors and trackers keep a region's `id` across frames. A region of a new frame is served from the cache
(a hit) only when the cache holds a description of the same id from the same sensor and frame_id, and:
- the region's prompt is the one it was described with,
- the caller did not ask for it to be described again (Region2D.refresh / Region3D.refresh),
- the entry is at most `ttl_s` seconds old by the frames' stamps, and not newer than the frame: a frame
  stamped before the entry (a bag loop, a simulator restart) is a miss,
- the box overlaps the box it was described with by an IoU of at least `iou_threshold`.
Anything else is a miss, with its reason; a region with an empty id is never cached. The age and the IoU are
measured against the entry as it was described, never as last served, so that slow drift or a long stay in
view adds up to a miss. The cache holds at most `max_entries` entries and evicts the least recently used.

Boxes: a 2-D box is (x1, y1, x2, y2) in pixels; a 3-D box is its 8 corners (8, 3) as the model reads them
(contract.boxes, regionblip_ros.conversions.region3d_to_corners), compared by the IoU of their axis-aligned
bounds in the cloud's frame. Those corners move with the box's centre, extents and rotation, so all three
count; a turn that leaves the bounds unchanged (a square box turned 90 degrees about z) counts as no change.

Pure Python and numpy, thread-safe (the worker writes, the diagnostics timer reads).
"""

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

import numpy as np

HIT = "hit"
# Why a region was not served from the cache: the keys of the miss counters.
NO_ID = "no_id"              # the region has an empty id: never cached
NEW = "new"                  # no entry for its id (first seen, or evicted)
REFRESH = "refresh"          # the caller asked for a fresh description
PROMPT = "prompt"            # described with another prompt
CLOCK_BACK = "clock_back"    # the frame is stamped before the entry: the clock jumped back
EXPIRED = "expired"          # the entry is older than ttl_s
MOVED = "moved"              # the box's IoU with the described one is under iou_threshold
MISSES = (NO_ID, NEW, REFRESH, PROMPT, CLOCK_BACK, EXPIRED, MOVED)
EVICTED = "evicted"

Key = tuple[str, str, str]  # (sensor or modality, header.frame_id, region id)


def box_iou(a, b) -> float:
    """IoU of two boxes given as 2-D (x1, y1, x2, y2) or as 3-D corner points (8, 3), whose axis-aligned bounds
    are compared. Boxes of no area (or volume) have an IoU of 1 with identical bounds and 0 otherwise."""
    lo_a, hi_a = _bounds(a)
    lo_b, hi_b = _bounds(b)
    if lo_a.shape != lo_b.shape:
        raise ValueError(f"cannot compare a {lo_a.size}-D box with a {lo_b.size}-D box")
    intersection = np.prod(np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0.0, None))
    union = np.prod(hi_a - lo_a) + np.prod(hi_b - lo_b) - intersection
    if not union > 0:
        return float(np.array_equal(lo_a, lo_b) and np.array_equal(hi_a, hi_b))
    return float(intersection / union)


def _bounds(box) -> tuple[np.ndarray, np.ndarray]:
    box = np.asarray(box, dtype=np.float64)
    if box.shape == (4,):
        return box[:2], np.maximum(box[2:], box[:2])
    if box.ndim == 2 and box.shape[1] == 3:
        return box.min(axis=0), box.max(axis=0)
    raise ValueError(f"a box is (x1, y1, x2, y2) or (N, 3) corner points, got shape {box.shape}")


@dataclass(frozen=True)
class CachedDescription:
    text: str
    score: float
    box: np.ndarray  # as described: (4,) xyxy pixels or (8, 3) corners
    prompt: str
    stamp_ns: int    # of the frame it was described on


class DescriptionCache:
    """Descriptions by (sensor, frame_id, region id); see the module docstring for when one is served."""

    def __init__(self, iou_threshold: float, ttl_s: float, max_entries: int):
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"cache IoU threshold {iou_threshold}: give a value from 0 to 1")
        if not ttl_s >= 0.0:
            raise ValueError(f"cache TTL {ttl_s} s: give 0 or more seconds")
        if max_entries < 1:
            raise ValueError(f"cache size {max_entries}: give at least 1 entry")
        self.iou_threshold, self.ttl_ns, self.max_entries = iou_threshold, round(ttl_s * 1e9), max_entries
        self._entries: OrderedDict[Key, CachedDescription] = OrderedDict()  # least recently used first
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def lookup(self, key: Key, box, prompt: str, stamp_ns: int,
               refresh: bool = False) -> tuple[CachedDescription | None, str]:
        """(the cached description, HIT) when the region of `key` may be served from the cache, else (None, why
        not: one of MISSES). Counted either way."""
        with self._lock:
            outcome = self._outcome(key, box, prompt, stamp_ns, refresh)
            self._counts[outcome] += 1
            if outcome != HIT:
                return None, outcome
            self._entries.move_to_end(key)
            return self._entries[key], HIT

    def _outcome(self, key: Key, box, prompt: str, stamp_ns: int, refresh: bool) -> str:
        if not key[2]:
            return NO_ID
        entry = self._entries.get(key)
        if entry is None:
            return NEW
        if refresh:
            return REFRESH
        if prompt != entry.prompt:
            return PROMPT
        if stamp_ns < entry.stamp_ns:
            return CLOCK_BACK
        if stamp_ns - entry.stamp_ns > self.ttl_ns:
            return EXPIRED
        if box_iou(box, entry.box) < self.iou_threshold:
            return MOVED
        return HIT

    def store(self, key: Key, box, prompt: str, stamp_ns: int, text: str, score: float) -> None:
        """Keep a fresh description of the region of `key` (not for an empty id), evicting the least recently
        used entry when full."""
        if not key[2]:
            return
        entry = CachedDescription(text, float(score), np.array(box, dtype=np.float64), prompt, int(stamp_ns))
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self._counts[EVICTED] += 1

    def counts(self) -> dict[str, int]:
        """Hits, misses (in all and by reason) and evictions since the cache was made, and the entries held now."""
        with self._lock:
            counts, entries = Counter(self._counts), len(self._entries)
        return {"hits": counts[HIT], "misses": sum(counts[reason] for reason in MISSES),
                **{f"misses: {reason}": counts[reason] for reason in MISSES},
                "evicted": counts[EVICTED], "entries": entries}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
