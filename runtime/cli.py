"""Describe regions from the command line, one line per region.

    python -m runtime.cli --bundle B --image img.png --box 10,20,120,200 [--box ...]
    python -m runtime.cli --bundle B --points scene.npy --box3d 1.0,0.5,0.4,0.6,0.6,0.8[,yaw] [...]
    python -m runtime.cli --bundle B --points object.npy          (the whole object)
    python -m runtime.cli --bundle B --image img.png              (the whole image)
    python -m runtime.cli --bundle B --image img.png --box ... --prompt "Question: what colour is it? Answer:"
    python -m runtime.cli --bundle B --verify                     (hash every file of the bundle, then exit)
    python -m runtime.cli --bundle B --tune-threads               (measure the fastest thread count, keep it)
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np

from contract.boxes import box_corners, yaw_to_matrix
from contract.cli import OneLineParser
from contract.generation import MAX_PROMPT_TOKENS
from runtime.bundle import FULL, QUICK, load_bundle
from runtime.describer import BACKENDS, Describer
from runtime.threads import THREADS_NAME, tune_threads


def _numbers(text: str, counts: tuple[int, ...], example: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise argparse.ArgumentTypeError(f"{text!r} is not {' or '.join(map(str, counts))} comma-separated "
                                         f"numbers, e.g. {example}")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} has a number that is not finite")
    return values


def pixel_box(text: str) -> list[float]:
    """--box x1,y1,x2,y2 in pixels."""
    return _numbers(text, (4,), "10,20,120,200")


def box_3d(text: str) -> list[float]:
    """--box3d cx,cy,cz,sx,sy,sz[,yaw]: sizes are full extents, so never negative (as the ROS node requires)."""
    values = _numbers(text, (6, 7), "cx,cy,cz,sx,sy,sz[,yaw]")
    if any(size < 0 for size in values[3:6]):
        raise argparse.ArgumentTypeError(f"{text!r} has a negative size {values[3:6]}: give full extents "
                                         "sx,sy,sz >= 0")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        raise ValueError(f"image {path} is a directory: give an image file (PNG, JPEG, ...)")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as error:
        raise ValueError(f"image {path} does not exist") from error
    except UnidentifiedImageError as error:
        raise ValueError(f"image {path} is not an image file PIL can read (PNG, JPEG, ...)") from error
    except (OSError, SyntaxError) as error:  # how PIL reports a truncated or damaged file
        reason = getattr(error, "strerror", None) or error
        raise ValueError(f"image {path} cannot be read ({reason}): give a complete image file") from error


def read_points(path: Path) -> np.ndarray:
    if path.is_dir():
        raise ValueError(f"point cloud {path} is a directory: give a .npy file")
    try:
        points = np.load(path, allow_pickle=False)
    except FileNotFoundError as error:
        raise ValueError(f"point cloud {path} does not exist") from error
    except (ValueError, OSError) as error:
        raise ValueError(f"point cloud {path} is not a .npy array file ({error})") from error
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"point cloud {path} has shape {points.shape}: save an (N, 3) array (x, y, z first)")
    return points[:, :3].astype(np.float32)


def boxes_3d(values: list[list[float]]) -> np.ndarray:
    boxes = np.array([v + [0.0] * (7 - len(v)) for v in values])
    return box_corners(boxes[:, :3], boxes[:, 3:6], yaw_to_matrix(boxes[:, 6]))


def _label(values: list[float]) -> str:
    return ",".join(f"{v:.15g}" for v in values)


def describe(args) -> list[str]:
    if (args.image is None) == (args.points is None):
        raise ValueError("give exactly one of --image or --points")
    if args.box and args.image is None or args.box3d and args.points is None:
        raise ValueError("--box goes with --image, --box3d with --points")
    # The inputs are read before the bundle is loaded, so that a bad one fails at once.
    image = read_image(args.image) if args.image is not None else None
    points = read_points(args.points) if args.points is not None else None
    describer = Describer.from_bundle(args.bundle, backend=args.backend, device=args.device,
                                      verify=FULL if args.verify else QUICK)
    describer.configure(**{k: v for k, v in (("num_beams", args.beams), ("max_new_tokens", args.max_new_tokens))
                           if v is not None})
    describer.encode_prompt(args.prompt)  # a prompt too long for every region is a bad argument, said at once
    regions = len(args.box or args.box3d) or 1
    prompts = [args.prompt] * regions if args.prompt else None
    if image is not None:
        if args.box:
            results = describer.describe_image_regions(image, args.box, prompts=prompts)
            labels = [f"box {i} [{_label(b)}]" for i, b in enumerate(args.box)]
        else:
            results, labels = describer.describe_images([image], prompts=prompts), ["image"]
    elif args.box3d:
        results = describer.describe_point_regions(points, boxes_3d(args.box3d), prompts=prompts)
        labels = [f"box3d {i} [{_label(b)}]" for i, b in enumerate(args.box3d)]
    else:
        results, labels = describer.describe_point_objects([points], prompts=prompts), ["object"]
    return [f"{label}: not described: {r.problem}" if r.problem else
            f"{label}: {r.text} (score {r.score:.2f}, {r.timings_ms['total']:.0f} ms)"
            for label, r in zip(labels, results)]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m runtime.cli", description=__doc__.splitlines()[0],
                            epilog="\n".join(__doc__.splitlines()[2:]),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path, help="exported bundle (python -m export.onnx)")
    parser.add_argument("--image", type=Path, help="RGB image file")
    parser.add_argument("--box", action="append", default=[], type=pixel_box,
                        help="pixel box x1,y1,x2,y2 (repeatable)")
    parser.add_argument("--points", type=Path, help="point cloud .npy, (N, 3) or more columns (x, y, z first)")
    parser.add_argument("--box3d", action="append", default=[], type=box_3d,
                        help="3D box cx,cy,cz,sx,sy,sz[,yaw] in the cloud's units, sizes >= 0 (repeatable)")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--beams", type=positive_int, help="beam width (default: the bundle's)")
    parser.add_argument("--max-new-tokens", type=positive_int, help="default: the bundle's")
    parser.add_argument("--prompt", default="",
                        help="text prompt for every region (or the image or object), placed after the soft prompt as "
                             "BLIP-2 places one, e.g. \"Question: what colour is it? Answer:\"; the description is "
                             f"what follows it (at most {MAX_PROMPT_TOKENS} tokens; default: none)")
    parser.add_argument("--verify", action="store_true",
                        help="hash every file against the manifest (sha256) before describing; without an image or "
                             "points, only verify. Ordinary loads check sizes and times against the last full "
                             "verification")
    parser.add_argument("--tune-threads", action="store_true",
                        help="time a typical call at 1 .. all cores and keep the fastest count in the bundle "
                             "(.threads.json), which later loads on this machine use; then exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.prompt and args.image is None and args.points is None:
            raise ValueError("--prompt goes with --image or --points: it asks about what they show")
        if args.verify and args.image is None and args.points is None:
            files = len(load_bundle(args.bundle, verify=FULL).manifest.files)
            print(f"bundle {args.bundle}: all {files} files match their sha256 in the manifest")
            return 0
        if args.tune_threads:
            load_bundle(args.bundle)  # a bad bundle is one line, before any timing
            record = tune_threads(args.bundle)
            timings = ", ".join(f"{count}: {ms:.1f} ms" for count, ms in record["ms"].items())
            print(f"bundle {args.bundle}: {record['threads']} thread(s) is fastest here ({timings}); kept in "
                  f"{args.bundle / THREADS_NAME}")
            return 0
        lines = describe(args)
    except ValueError as error:  # a bad argument, and BundleError, are ValueErrors
        print(f"runtime.cli: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
