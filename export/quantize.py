"""Reduced-precision variants of a bundle's graphs, made with ONNX Runtime's own tools, not hand-written kernels.

int8 / int4: weight-only, block-wise, symmetric quantization of the constant weight of every MatMul in the
    vision encoder and the LLM (ONNX Runtime's MatMulNBitsQuantizer, round-to-nearest; MatMulNBits kernels).
    Activations, norms, softmax and the KV cache stay fp32: the kernels dequantize weights and multiply in fp32.
int8-a8 / int4-a8: the same weights, but the kernels also quantize each activation block to int8 and multiply in
    int8 (MatMulNBits accuracy_level 4: VNNI / AVX512 dot products on x86, dot-product instructions on ARM),
    which pays when decoding is compute-bound (many regions in one batch on few cores), at some accuracy.
    The Q-Former and the point encoder stay fp32 as a whole: they are small, and the Q-Former is where
    transformers keeps fp32 too.
int8-dynamic: ONNX Runtime's dynamic quantization (quantize_dynamic): every MatMul's constant weight int8 per
    output channel, each activation quantized to uint8 per tensor as it arrives, and the products in int8 GEMMs
    (MLAS: AMX or VNNI where the CPU has them). The vision encoder, the LLM and the Q-Formers: on the bench
    preset's 2 cores (Sapphire Rapids, AMX) it ran the vision graph 3.1x, the 16-region Q-Former 1.7x and a
    16-row decode step 1.9x faster than fp32, where int8-a8's step was 1.1x (issue #19). An LLM whose output
    projection is tied to its token embedding keeps the fp32 embedding for the lookup beside the int8 copy.
fp16: float weights and activations of the same two graphs in fp16 (ONNX Runtime's float16 converter), with
    Softmax and the graphs' inputs and outputs kept fp32. LayerNormalization runs on fp16 tensors but computes
    its mean and variance in fp32 (its stash_type); blocking it as well leaves its fp16 scale mistyped. The
    LLM's LogSoftmax over the vocabulary runs in fp16 too (its ranked log-probs differ from fp32's by up to
    2e-3); blocking it leaves the bias Add after it mistyped.

Only the weights need quantizing, so no calibration data (and no GPU) is involved.
"""
import logging
import tempfile
from pathlib import Path

from export.external_data import gather_weights, graph_files

QUANTIZED_GRAPHS = ("vision", "llm")
BITS = {"int8": 8, "int4": 4, "int8-a8": 8, "int4-a8": 4}
DYNAMIC = "int8-dynamic"
QUANTIZE = (*BITS, DYNAMIC)  # export.onnx --quantize
INT8_COMPUTE = 4  # MatMulNBits accuracy_level: int8 activations
BLOCK_SIZE = 32
FP32_OPS = ("Softmax",)
PRECISIONS = ("fp32", "fp16", *QUANTIZE)


# quantize_dynamic holds a graph's fp32 weights and their quantized copies at once: the release size's LLM graph
# (9.9 GiB) was killed by the kernel on a machine with 23.6 GiB of RAM (2026-12-06), where MatMulNBits quantized it
# in 14.1 GB peak. So it needs more than 2.38 times the graph; how much more is not measured.
DYNAMIC_MEMORY_FACTOR = 2.4


def check_memory(precision: str, largest_graph_bytes: int, available: int | None = None) -> None:
    """Refuse, before any graph is exported, an int8-dynamic export that cannot fit in this machine's memory: a
    process the kernel kills leaves no message. `available`: bytes (default: /proc/meminfo's MemAvailable; no
    check where that cannot be read)."""
    if precision != DYNAMIC:
        return
    available = _available_memory() if available is None else available
    needed = DYNAMIC_MEMORY_FACTOR * largest_graph_bytes
    if available is not None and needed > available:
        raise ValueError(f"--quantize {DYNAMIC} holds a graph's fp32 weights and their int8 copies at once: more than "
                         f"{needed / 2**30:.1f} GiB for the largest graph here ({largest_graph_bytes / 2**30:.1f} GiB) "
                         f"and this machine has {available / 2**30:.1f} GiB available; export it on a machine with "
                         "more memory (the bundle runs anywhere), or use --quantize int8-a8 or int4-a8")


def _available_memory() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reduces(graph: str, precision: str) -> bool:
    """Whether a `precision` bundle rewrites graph `graph` (fp32: none)."""
    if precision == "fp32":
        return False
    return graph in QUANTIZED_GRAPHS or (precision == DYNAMIC and graph.startswith("qformer_"))


def reduce_precision(graph_path: Path, precision: str) -> list[Path]:
    """Rewrite the graph at graph_path (and its data file) in `precision`, in place; returns its files."""
    import onnx

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return graph_files(graph_path)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=graph_path.parent) as scratch:
        scratch_graph = Path(scratch) / graph_path.name
        if precision == DYNAMIC:  # ONNX Runtime's quantize_dynamic writes the graph itself
            _to_dynamic_int8(graph_path, scratch_graph)
        else:
            if precision == "fp16":
                model = _to_fp16(onnx.load(str(graph_path)))
            else:
                level = INT8_COMPUTE if precision.endswith("-a8") else None
                model = _to_nbits(str(graph_path), BITS[precision], level)
            onnx.save_model(model, str(scratch_graph), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=scratch_graph.name + ".weights", size_threshold=1024)
            del model
        for old in graph_files(graph_path):
            old.unlink()
        return gather_weights(scratch_graph, graph_path.parent)


def _to_nbits(path: str, bits: int, accuracy_level: int | None):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(path, bits=bits, block_size=BLOCK_SIZE, is_symmetric=True,
                                     accuracy_level=accuracy_level, op_types_to_quantize=("MatMul",))
    quantizer.process()
    return quantizer.model.model


def _to_dynamic_int8(path: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic asks on the root logger, every call, for a shape-inference pass that static (calibrated)
    # quantization wants; dynamic quantization reads only the weights, so the advice is left out of the export's output.
    advice = _Without("Please consider to run pre-processing before quantization")
    logging.getLogger().addFilter(advice)
    try:
        # MatMulConstBOnly: only products with a constant weight; attention's activation x activation MatMuls stay fp32.
        quantize_dynamic(path, out, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                         use_external_data_format=True, extra_options={"MatMulConstBOnly": True})
    finally:
        logging.getLogger().removeFilter(advice)


class _Without(logging.Filter):
    """Drops log records whose message starts with `prefix`."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _to_fp16(model):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP32_OPS),
                                    disable_shape_infer=True)
