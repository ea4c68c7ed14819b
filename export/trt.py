"""python -m export.trt --ckpt DIR --out BUNDLE [--fp16] [--workspace GB] [--max-batch N] [--max-regions N]

Builds one TensorRT engine per graph of an ONNX bundle, on the GPU that will run them. The ONNX
bundle is (re)exported first where it is missing, fails verification, or was exported from another
checkpoint, other modalities or other generation defaults; otherwise it is reused. Engines are
named by a cache key (TensorRT version, GPU, precision, profile shapes, ONNX sha256) and rebuilt only
when it changes; each new engine is checked against ONNX Runtime on random inputs within its profile.
Profiles: export/trt_profiles.py. Bookkeeping and the TensorRT calls: export/trt_build.py.

Exit status: 0 done, 2 bad input, 3 TensorRT or a CUDA GPU missing (the ONNX bundle is written), 1 a
build or parity failure.
"""
import sys
from pathlib import Path

from contract.generation import Decoding
from contract.manifest import MANIFEST_NAME, sha256
from export.onnx import build_parser as onnx_parser
from export.onnx import decoding_from, export_bundle, integer_at_least, parse_modalities, positive_number
from export.onnx import format_table as onnx_table
from export.trt_build import TIMING_CACHE, Toolchain, build_engines, format_table, tensorrt_toolchain
from export.trt_profiles import Limits, derive_profiles
from runtime.bundle import BundleError, load_bundle
from runtime.tensorrt_runner import ENGINES_DIR, tensorrt_unavailable


class ToolchainUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing on this machine."""


def open_toolchain(device: str) -> Toolchain:
    reason = tensorrt_unavailable()
    if reason:
        raise ToolchainUnavailable(reason)
    return tensorrt_toolchain(device)


def checkpoint_sha256(checkpoint: Path) -> str:
    weights = Path(checkpoint) / "model.safetensors"
    if not Path(checkpoint).is_dir():
        found = "is a file, not a directory" if Path(checkpoint).exists() else "does not exist"
        raise ValueError(f"checkpoint {checkpoint} {found}: pass a directory written by save_pretrained")
    if not weights.is_file():
        raise ValueError(f"checkpoint {checkpoint} has no model.safetensors: pass a directory written by "
                         "save_pretrained")
    return sha256(weights)


def export_reason(out: Path, checkpoint: Path, modalities: list[str], decoding: Decoding,
                  image_size: int | None = None) -> str | None:
    """Why the ONNX bundle at `out` must be (re)exported, or None where it can be reused."""
    if not (Path(out) / MANIFEST_NAME).is_file():
        return f"no bundle at {out}"
    try:
        manifest = load_bundle(out).manifest
    except BundleError as error:
        return f"the bundle at {out} fails verification ({error})"
    if manifest.source.model_sha256 != checkpoint_sha256(checkpoint):
        return "the bundle was exported from a different checkpoint"
    if manifest.modalities != modalities:
        return f"the bundle has modalities {manifest.modalities}, not {modalities}"
    if image_size is not None and manifest.preprocess.image_size != image_size:
        return f"the bundle takes {manifest.preprocess.image_size} px images, not {image_size}"
    if manifest.precision != "fp32":
        return f"the bundle's graphs are {manifest.precision}; TensorRT builds from fp32 graphs (--fp16 for fp16 engines)"
    recorded = Decoding(**{name: getattr(manifest.generation, name) for name in vars(decoding)})
    if recorded != decoding:
        return f"the bundle has generation defaults {recorded}, not {decoding}"
    return None


def export_onnx(args, modalities: list[str], decoding: Decoding, reason: str) -> None:
    """Export the ONNX bundle, keeping the timing cache of the engines it replaces (it stays valid)."""
    print(f"export.trt: exporting the ONNX bundle: {reason}")
    cache = Path(args.out) / ENGINES_DIR / TIMING_CACHE
    timings = cache.read_bytes() if cache.is_file() else None
    print(onnx_table(export_bundle(args.ckpt, args.out, modalities, decoding, image_size=args.image_size)))
    if timings is not None:
        cache.parent.mkdir(exist_ok=True)
        cache.write_bytes(timings)


def build_parser():
    parser = onnx_parser()  # the ONNX export's options, so both commands write the same bundle
    parser.prog = "python -m export.trt"
    parser.description = "Build TensorRT engines, one per graph, for a RegionBLIP bundle (exported first if needed)."
    parser.add_argument("--fp16", action="store_true", help="build fp16 engines (default fp32)")
    parser.add_argument("--workspace", type=positive_number, default=4.0, help="builder workspace in GB (default 4)")
    parser.add_argument("--max-batch", type=integer_at_least(1), default=Limits.max_batch,
                        help=f"most frames, scenes or objects per call (default {Limits.max_batch})")
    parser.add_argument("--max-regions", type=integer_at_least(1), default=Limits.max_regions,
                        help=f"most regions per call (default {Limits.max_regions})")
    parser.add_argument("--parity-tolerance", type=positive_number,
                        help="largest accepted |TensorRT - ONNX Runtime| (default 1e-3 fp32, 5e-2 fp16)")
    parser.add_argument("--device", default="cuda", help="CUDA device to build for (default cuda)")
    return parser


def main(argv: list[str] | None = None, toolchain: Toolchain | None = None) -> int:
    """`toolchain` replaces TensorRT in tests; None opens the real one."""
    try:
        args = build_parser().parse_args(argv)
        modalities = parse_modalities(args.modalities)
        decoding = decoding_from(args)
        limits = Limits(args.max_batch, args.max_regions)
        if args.precision != "fp32" or args.quantize:
            raise ValueError("TensorRT engines are built from the fp32 graphs: use --fp16 for fp16 engines; "
                             "--precision and --quantize make reduced-precision ONNX Runtime bundles (export.onnx)")
        if not args.device.startswith("cuda"):
            raise ValueError(f"--device {args.device!r}: TensorRT builds for a CUDA GPU, give cuda or cuda:N")
        checkpoint_sha256(args.ckpt)
        reason = export_reason(args.out, args.ckpt, modalities, decoding, args.image_size)
        if reason:
            export_onnx(args, modalities, decoding, reason)
        else:
            print(f"export.trt: reusing the ONNX bundle at {args.out} (same checkpoint, modalities and "
                  "generation defaults)")
        bundle = load_bundle(args.out)
        profiles = derive_profiles(bundle.manifest, limits)
        toolchain = toolchain or open_toolchain(args.device)
        precision = "fp16" if args.fp16 else "fp32"
        rows = build_engines(bundle, profiles, precision, int(args.workspace * 2**30), toolchain,
                             tolerance=args.parity_tolerance)
    except ToolchainUnavailable as error:
        print(f"export.trt: {error}; the ONNX bundle is written to {args.out}", file=sys.stderr)
        return 3
    except ValueError as error:  # includes BundleError
        print(f"export.trt: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"export.trt: cannot write the engines under {Path(args.out) / ENGINES_DIR}: {error.strerror or error}",
              file=sys.stderr)
        return 2
    except RuntimeError as error:  # a parse, build or parity failure; the engines built before it are kept
        print(f"export.trt: {error}", file=sys.stderr)
        return 1
    print(format_table(rows))
    print(f"{precision} engines written to {Path(args.out) / ENGINES_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
