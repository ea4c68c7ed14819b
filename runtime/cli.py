"""Describe regions from the command line, one line per region.

    python -m runtime.cli --bundle B --image img.png --box 10,20,120,200 [--box ...]
    python -m runtime.cli --bundle B --points scene.npy --box3d 1.0,0.5,0.4,0.6,0.6,0.8[,yaw] [...]
    python -m runtime.cli --bundle B --points object.npy          (the whole object)
    python -m runtime.cli --bundle B --image img.png              (the whole image)
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from contract.boxes import box_corners, yaw_to_matrix
from runtime.describer import BACKENDS, Describer


def _numbers(text: str, counts: tuple[int, ...], what: str, example: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in counts:
        raise ValueError(f"{what} {text!r} is not {' or '.join(map(str, counts))} comma-separated numbers, "
                         f"e.g. {example}")
    return values


def read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as error:
        raise ValueError(f"image {path} does not exist") from error
    except UnidentifiedImageError as error:
        raise ValueError(f"image {path} is not an image file PIL can read (PNG, JPEG, ...)") from error


def read_points(path: Path) -> np.ndarray:
    try:
        points = np.load(path, allow_pickle=False)
    except FileNotFoundError as error:
        raise ValueError(f"point cloud {path} does not exist") from error
    except (ValueError, OSError) as error:
        raise ValueError(f"point cloud {path} is not a .npy array file ({error})") from error
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"point cloud {path} has shape {points.shape}: save an (N, 3) array (x, y, z first)")
    return points[:, :3].astype(np.float32)


def boxes_3d(texts: list[str]) -> np.ndarray:
    values = [_numbers(t, (6, 7), "--box3d", "cx,cy,cz,sx,sy,sz[,yaw]") for t in texts]
    boxes = np.array([v + [0.0] * (7 - len(v)) for v in values])
    return box_corners(boxes[:, :3], boxes[:, 3:6], yaw_to_matrix(boxes[:, 6]))


def describe(args) -> list[str]:
    if (args.image is None) == (args.points is None):
        raise ValueError("give exactly one of --image or --points")
    if args.box and args.image is None or args.box3d and args.points is None:
        raise ValueError("--box goes with --image, --box3d with --points")
    describer = Describer.from_bundle(args.bundle, backend=args.backend, device=args.device)
    describer.configure(**{k: v for k, v in (("num_beams", args.beams), ("max_new_tokens", args.max_new_tokens))
                           if v is not None})
    if args.image is not None:
        image = read_image(args.image)
        if args.box:
            boxes = [_numbers(b, (4,), "--box", "10,20,120,200") for b in args.box]
            results = describer.describe_image_regions(image, boxes)
            labels = [f"box {i} [{b}]" for i, b in enumerate(args.box)]
        else:
            results, labels = describer.describe_images([image]), ["image"]
    else:
        points = read_points(args.points)
        if args.box3d:
            results = describer.describe_point_regions(points, boxes_3d(args.box3d))
            labels = [f"box3d {i} [{b}]" for i, b in enumerate(args.box3d)]
        else:
            results, labels = describer.describe_point_objects([points]), ["object"]
    return [f"{label}: not described: {r.problem}" if r.problem else
            f"{label}: {r.text} (score {r.score:.2f}, {r.timings_ms['total']:.0f} ms)"
            for label, r in zip(labels, results)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime.cli", description=__doc__.splitlines()[0],
                                     epilog="\n".join(__doc__.splitlines()[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path, help="exported bundle (python -m export.onnx)")
    parser.add_argument("--image", type=Path, help="RGB image file")
    parser.add_argument("--box", action="append", default=[], help="pixel box x1,y1,x2,y2 (repeatable)")
    parser.add_argument("--points", type=Path, help="point cloud .npy, (N, 3) or more columns (x, y, z first)")
    parser.add_argument("--box3d", action="append", default=[],
                        help="3D box cx,cy,cz,sx,sy,sz[,yaw] in the cloud's units (repeatable)")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--beams", type=int, help="beam width (default: the bundle's)")
    parser.add_argument("--max-new-tokens", type=int, help="default: the bundle's")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        lines = describe(args)
    except ValueError as error:  # BundleError is a ValueError
        print(f"runtime.cli: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
