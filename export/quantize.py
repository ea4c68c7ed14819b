"""Reduced-precision variants of a bundle's graphs, made with ONNX Runtime's own tools, not hand-written kernels.

int8 / int4: weight-only, block-wise, symmetric quantization of the constant weight of every MatMul in the
    vision encoder and the LLM (ONNX Runtime's MatMulNBitsQuantizer, round-to-nearest; MatMulNBits kernels).
    Activations, norms, softmax and the KV cache stay fp32: the kernels dequantize weights and multiply in fp32.
int8-a8 / int4-a8: the same weights, but the kernels also quantize each activation block to int8 and multiply in
    int8 (MatMulNBits accuracy_level 4: VNNI / AVX512 dot products on x86, dot-product instructions on ARM),
    which pays when decoding is compute-bound (many regions in one batch on few cores), at some accuracy.
    The Q-Former and the point encoder stay fp32 as a whole: they are small, and the Q-Former is where
    transformers keeps fp32 too.
fp16: float weights and activations of the same two graphs in fp16 (ONNX Runtime's float16 converter), with
    Softmax and the graphs' inputs and outputs kept fp32. LayerNormalization runs on fp16 tensors but computes
    its mean and variance in fp32 (its stash_type); blocking it as well leaves its fp16 scale mistyped. The
    LLM's LogSoftmax over the vocabulary runs in fp16 too (its ranked log-probs differ from fp32's by up to
    2e-3); blocking it leaves the bias Add after it mistyped.

Only the weights need quantizing, so no calibration data (and no GPU) is involved.
"""
import tempfile
from pathlib import Path

from export.external_data import gather_weights, graph_files

QUANTIZED_GRAPHS = ("vision", "llm")
BITS = {"int8": 8, "int4": 4, "int8-a8": 8, "int4-a8": 4}
INT8_COMPUTE = 4  # MatMulNBits accuracy_level: int8 activations
BLOCK_SIZE = 32
FP32_OPS = ("Softmax",)
PRECISIONS = ("fp32", "fp16", *BITS)


def reduce_precision(graph_path: Path, precision: str) -> list[Path]:
    """Rewrite the graph at graph_path (and its data file) in `precision`, in place; returns its files."""
    import onnx

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return graph_files(graph_path)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=graph_path.parent) as scratch:
        scratch_graph = Path(scratch) / graph_path.name
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


def _to_fp16(model):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, op_block_list=list(FP32_OPS),
                                    disable_shape_infer=True)
