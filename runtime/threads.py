"""The intra-op thread count for a bundle, chosen by measuring it on the machine that runs it.

ONNX Runtime's default, all cores, is the wrong choice for small graphs: the embedded default model describes 4-5x
faster on one thread than on two here, because each of its many small kernels costs more to split than to run.
Large graphs gain from every core. Which count wins depends on the model, the CPU and what else runs on it, so
`tune_threads` times one typical call (a frame with a few regions, a few tokens each) at each count and keeps the
fastest in the bundle's `.threads.json`, a record of this machine (like `.verified.json`, not part of the
manifest). `Describer.from_bundle(threads=None)` then uses it; without a record, or with one made on a machine
with another core count, ONNX Runtime's default stands. Run `python -m runtime.cli --bundle B --tune-threads` once
on the robot (make demo does it for the default bundle).
"""
import json
import os
import time
from pathlib import Path

import numpy as np

THREADS_NAME = ".threads.json"
RECORD_FORMAT = 1


def recorded_threads(bundle_path: Path) -> int | None:
    """The thread count measured for this bundle on a machine with this many cores, or None."""
    try:
        record = json.loads((Path(bundle_path) / THREADS_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None
    threads = record.get("threads")
    if record.get("cpu_count") != os.cpu_count() or not isinstance(threads, int) or threads < 1:
        return None
    return threads


def _typical_call(describer):
    """A call like the node's: one frame with 4 regions (camera if the bundle has it, else LiDAR), 4 tokens each."""
    rng = np.random.default_rng(0)
    describer.configure(num_beams=1, max_new_tokens=4, min_new_tokens=4)
    if "image_region" in describer.modalities:
        image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        boxes = [[20, 20, 120, 120], [100, 40, 220, 200], [0, 0, 320, 240], [200, 120, 300, 220]]
        return lambda: describer.describe_image_regions(image, boxes)
    if "pointcloud_region" in describer.modalities:
        scene = rng.uniform(-2, 2, (describer.scene_num_points, 3)).astype(np.float32)
        corners = np.array([[[x, y, z] for x in (a, a + 1) for y in (0, 1) for z in (0, 1)] for a in (-2, -1, 0, 1)],
                           np.float32)
        return lambda: describer.describe_point_regions(scene, corners)
    modality = describer.modalities[0]
    if modality == "pointcloud":
        cloud = rng.uniform(-1, 1, (describer.object_num_points, 3)).astype(np.float32)
        return lambda: describer.describe_point_objects([cloud] * 4)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    return lambda: describer.describe_images([image] * 4)


def tune_threads(bundle_path: Path, candidates: list[int] | None = None, repeats: int = 3) -> dict:
    """Time the typical call at each candidate count (default 1 .. all cores), each in a describer of its own, and
    write the record; returns it: {"threads": fastest, "ms": {count: median ms}, ...}."""
    from runtime.describer import Describer

    candidates = candidates or list(range(1, (os.cpu_count() or 1) + 1))
    timings = {}
    for count in candidates:
        describer = Describer.from_bundle(bundle_path, threads=count)
        call = _typical_call(describer)
        call()  # warm-up: session start-up, first allocations
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        timings[count] = 1e3 * float(np.median(times))
        del describer
    record = {"format": RECORD_FORMAT, "threads": min(timings, key=timings.get), "cpu_count": os.cpu_count(),
              "ms": {str(count): ms for count, ms in timings.items()},
              "load_average_1min": os.getloadavg()[0], "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    temporary = Path(bundle_path) / f"{THREADS_NAME}.tmp"
    temporary.write_text(json.dumps(record, indent=2))
    os.replace(temporary, Path(bundle_path) / THREADS_NAME)
    return record
