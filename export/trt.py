"""python -m export.trt --ckpt DIR --out BUNDLE [--engine-precision fp32|fp16|int8|int4] [--calibration-data NPZ]
                       [--workspace GB] [--max-batch N] [--max-regions N]

Builds one TensorRT engine per graph of an ONNX bundle, on the GPU that will run them. The ONNX
bundle is (re)exported first where it is missing, fails verification, or was exported from another
checkpoint, other modalities or other generation defaults; otherwise it is reused. Engines are
named by a cache key (TensorRT version, GPU, precision, profile shapes, ONNX sha256) and rebuilt only
when it changes; each new engine is checked against ONNX Runtime on random inputs within its profile.
Profiles: export/trt_profiles.py. Bookkeeping and the TensorRT calls: export/trt_build.py. Which
graph is built in which precision, and which layers an fp16 engine keeps fp32: export/trt_precision.py.
int8 / int4 quantize the LLM with NVIDIA ModelOpt first: export/trt_quantize.py.

Exit status: 0 done, 2 bad input, 3 TensorRT, a CUDA GPU or (int8 / int4) ModelOpt missing (the ONNX
bundle is written), 1 a build or parity failure.
"""
import sys
from pathlib import Path

from contract.generation import Decoding
from contract.manifest import MANIFEST_NAME, sha256
from export.onnx import build_parser as onnx_parser
from export.onnx import decoding_from, export_bundle, integer_at_least, parse_modalities, positive_number
from export.onnx import format_table as onnx_table
from export.trt_build import TIMING_CACHE, Toolchain, build_engines, format_table, tensorrt_toolchain
from export.trt_precision import PRECISIONS
from export.trt_profiles import Limits, derive_profiles
from export.trt_quantize import modelopt_unavailable, read_calibration
from runtime.bundle import BundleError, load_bundle
from runtime.tensorrt_runner import ENGINES_DIR, tensorrt_unavailable


class ToolchainUnavailable(RuntimeError):
    """TensorRT, a CUDA GPU or (for int8 / int4) ModelOpt is missing on this machine."""


def open_toolchain(device: str, precision: str = "fp32") -> Toolchain:
    reason = tensorrt_unavailable() or (modelopt_unavailable() if precision in ("int8", "int4") else None)
    if reason:
        raise ToolchainUnavailable(reason)
    return tensorrt_toolchain(device)


def engine_precision(args) -> str:
    """The build's precision from --engine-precision / --fp16, refusing the ONNX-only precision options."""
    if args.quantize:
        raise ValueError(f"TensorRT engines are built from the fp32 graphs: --quantize {args.quantize} writes ONNX "
                         "Runtime's com.microsoft MatMulNBits, which TensorRT's ONNX parser does not import; use "
                         "--engine-precision int8 or int4 (ModelOpt Q/DQ) for quantized engines")
    if args.precision != "fp32":
        raise ValueError(f"TensorRT engines are built from the fp32 graphs: for {args.precision} engines use "
                         f"--engine-precision {args.precision} (--precision makes ONNX Runtime bundles)")
    if args.fp16 and args.engine_precision not in (None, "fp16"):
        raise ValueError(f"--fp16 and --engine-precision {args.engine_precision} disagree: give one of them")
    precision = args.engine_precision or ("fp16" if args.fp16 else "fp32")
    if args.calibration_data is not None:
        if precision not in ("int8", "int4"):
            raise ValueError(f"--calibration-data calibrates int8 / int4 engines, not {precision} ones: drop it "
                             "or add --engine-precision int4")
        if not Path(args.calibration_data).is_file():
            raise ValueError(f"--calibration-data {args.calibration_data} does not exist: give a .npz file with "
                             "one array per llm graph input")
    elif precision == "int8":
        raise ValueError("int8 engines quantize the LLM's activations too (TensorRT's INT8 is W8A8), so they need "
                         "real activation ranges: pass --calibration-data FILE.npz, or use --engine-precision int4 "
                         "(weight-only, no calibration needed)")
    return precision


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
        return (f"the bundle's graphs are {manifest.precision}; TensorRT builds from fp32 graphs "
                "(--engine-precision for fp16, int8 or int4 engines)")
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
    parser.add_argument("--engine-precision", choices=PRECISIONS, default=None,
                        help="fp32 (default; TF32 off), fp16 (vision and LLM in fp16 with LayerNorm, softmax, "
                             "reductions and the LLM head kept fp32; the Q-Former stays fp32), or int8 / int4: the "
                             "LLM quantized by NVIDIA ModelOpt (pip install \"nvidia-modelopt[onnx]\"), INT8 "
                             "weights and activations or INT4 weights only (W4A16), the vision encoder fp16")
    parser.add_argument("--fp16", action="store_true", help="the same as --engine-precision fp16")
    parser.add_argument("--calibration-data", type=Path, default=None, metavar="NPZ",
                        help="int8 (required) / int4 (optional: AWQ with it, round-to-nearest without): the llm "
                             "graph's inputs from real captions, one array per input name. Calibration runs the "
                             "fp32 LLM in ONNX Runtime, on CUDA where onnxruntime-gpu is installed, else on the CPU; "
                             "every engine build itself needs the GPU")
    parser.add_argument("--workspace", type=positive_number, default=4.0, help="builder workspace in GB (default 4)")
    parser.add_argument("--max-batch", type=integer_at_least(1), default=Limits.max_batch,
                        help=f"most frames, scenes or objects per call (default {Limits.max_batch})")
    parser.add_argument("--max-regions", type=integer_at_least(1), default=Limits.max_regions,
                        help=f"most regions per call (default {Limits.max_regions})")
    parser.add_argument("--parity-tolerance", type=positive_number,
                        help="largest accepted |TensorRT - ONNX Runtime| (default 1e-3 fp32, 5e-2 fp16 and int4, "
                             "1e-1 int8; int8 / int4 engines are compared with the quantized graph they were built "
                             "from)")
    parser.add_argument("--device", default="cuda", help="CUDA device to build for (default cuda)")
    return parser


def main(argv: list[str] | None = None, toolchain: Toolchain | None = None) -> int:
    """`toolchain` replaces TensorRT in tests; None opens the real one."""
    try:
        args = build_parser().parse_args(argv)
        modalities = parse_modalities(args.modalities)
        decoding = decoding_from(args)
        limits = Limits(args.max_batch, args.max_regions)
        precision = engine_precision(args)
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
        if args.calibration_data:  # checked now, not after every other graph's engine is built
            read_calibration(args.calibration_data, [spec.name for spec in bundle.manifest.graphs["llm"].inputs])
        toolchain = toolchain or open_toolchain(args.device, precision)
        rows = build_engines(bundle, profiles, precision, int(args.workspace * 2**30), toolchain,
                             tolerance=args.parity_tolerance, calibration=args.calibration_data)
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
    print(f"{precision} build: engines written to {Path(args.out) / ENGINES_DIR} (each graph's precision above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
