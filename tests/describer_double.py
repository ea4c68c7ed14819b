"""A test double of runtime.Describer: deterministic text, the runtime's input checks, optional delay.

Its descriptions say what it was given ("region 1 of 64x48 image", "object 0 among 500 points", and a region's
text prompt: "region 0 of 64x48 image, asked 'what colour?'"), so a test can check that the node passed the right
frame, regions and prompts; `prompts` records each call's prompts argument. Prompts go through the runtime's own
check (runtime.prompts.check_prompts). Boxes go through the runtime's own box check
(runtime.preprocess), so a box the runtime would refuse comes back as the runtime's refused Description, with its
problem. It raises ValueError where the runtime would for bad input, and for frames the tests use to provoke a
describer error: images under 8 pixels wide or high, and clouds of fewer than 4 points. cancel() ends a call's
delay early with runtime.Cancelled, as the runtime stops between decode steps.
"""

import threading
import time

import numpy as np

from runtime import Cancelled, preprocess
from runtime.description import Description
from runtime.prompts import check_prompts

MIN_IMAGE_PX = 8
MIN_POINTS = 4


class DescriberDouble:
    backend = "double"

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.calls: list[tuple[str, int]] = []  # (method, number of regions), in call order
        self.prompts: list[list[str] | None] = []  # each call's prompts, in call order
        self._lock = threading.Lock()
        self._busy = False
        self.overlapping_calls = 0  # calls that started while another was running
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def _enter(self, method: str, regions: int) -> None:
        with self._lock:
            self.overlapping_calls += self._busy
            self._busy = True
            self.calls.append((method, regions))

    def _leave(self) -> None:
        try:
            if self.cancelled.wait(self.delay_s):
                raise Cancelled("the describer double was cancelled")
        finally:
            with self._lock:
                self._busy = False

    @staticmethod
    def _answer(count: int, problems: dict[int, str], describe) -> list[Description]:
        """The runtime's shape of an answer: row i described as describe(i), unless it has a problem."""
        return [Description.refused(problems[row]) if row in problems else describe(row) for row in range(count)]

    def describe_image_regions(self, image, boxes_xyxy_px, min_region_px: float = 0.0,
                               prompts=None) -> list[Description]:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if boxes_xyxy_px.dtype != np.float32 or boxes_xyxy_px.ndim != 2 or boxes_xyxy_px.shape[1] != 4:
            raise ValueError(f"boxes must be (R, 4) float32, got {boxes_xyxy_px.shape} {boxes_xyxy_px.dtype}")
        height, width = image.shape[:2]
        if min(height, width) < MIN_IMAGE_PX:
            raise ValueError(f"image {width}x{height} is smaller than {MIN_IMAGE_PX}x{MIN_IMAGE_PX}")
        _, problems = preprocess.preprocess_boxes(boxes_xyxy_px, image.shape, min_region_px)
        asked = self._asked(prompts, len(boxes_xyxy_px))
        self._enter("describe_image_regions", len(boxes_xyxy_px))
        self._leave()
        return self._answer(len(boxes_xyxy_px), problems, lambda i: Description(
            text=f"region {i} of {width}x{height} image{asked[i]}", score=-0.5 - i, token_ids=(i,),
            timings_ms={"total": 1e3 * self.delay_s}))

    def describe_point_regions(self, points, corners, prompts=None) -> list[Description]:
        if points.dtype != np.float32 or points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points must be (N, 3) float32, got {points.shape} {points.dtype}")
        if corners.dtype != np.float32 or corners.shape[1:] != (8, 3):
            raise ValueError(f"corners must be (R, 8, 3) float32, got {corners.shape} {corners.dtype}")
        if len(points) < MIN_POINTS:
            raise ValueError(f"{len(points)} points are too few: need at least {MIN_POINTS}")
        _, problems = preprocess.check_corners(corners)
        asked = self._asked(prompts, len(corners))
        self._enter("describe_point_regions", len(corners))
        self._leave()
        return self._answer(len(corners), problems, lambda i: Description(
            text=f"object {i} among {len(points)} points{asked[i]}", score=-0.25, token_ids=(i,),
            timings_ms={"total": 1e3 * self.delay_s}))

    def _asked(self, prompts, count: int) -> list[str]:
        """What each description adds for its region's prompt (", asked 'PROMPT'", or nothing)."""
        checked = check_prompts(prompts, count)
        self.prompts.append(None if prompts is None else list(prompts))
        return [f", asked {prompt!r}" if prompt else "" for prompt in checked or [""] * count]
