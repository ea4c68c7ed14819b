"""What precision each graph's TensorRT engine is built in, and which layers an fp16 engine keeps in fp32.

build_settings() decides a graph's build configuration as plain data; engines.json records it and the tests
read it. configure() is the only code here that touches TensorRT: it turns those settings into builder
flags and per-layer precision constraints.

  fp32   TF32 is cleared, so fp32 engines compute in fp32 and the 1e-3 absolute parity check means what
         it says (TensorRT enables TF32 by default: 10-bit mantissas in every MatMul on Ampere and newer).
  fp16   the vision encoder and the LLM in fp16, with LayerNorm, softmax, reductions, pow, decomposed
         norms and the LLM's head (vocabulary projection, log-softmax, top-k) held in fp32 by precision
         constraints that the builder must obey. The Q-Former stays fp32 as a whole, as transformers keeps
         it (Blip2's _keep_in_fp32_modules); the point encoder too (its FPS and kNN rank distances).
  int8   the LLM from ModelOpt's Q/DQ ONNX (export/trt_quantize.py) in a strongly typed network: the
  int4   graph's own casts and Q/DQ types decide every layer, so no precision flags are set. TensorRT's
         INT8 quantizes activations as well as weights (W8A8); INT4 is weight-only (W4A16). The vision
         encoder is built fp16 as above; the other graphs fp32.
"""
import re
from dataclasses import dataclass

from export.quantize import QUANTIZED_GRAPHS
from export.trt_quantize import quantize_recipe

PRECISIONS = ("fp32", "fp16", "int8", "int4")
QUANTIZED_LLM = "llm"  # the graph that int8 / int4 quantize: nearly all of the weights that a decode step reads
# TensorRT layer types that compute statistics over many elements: LayerNorm's mean and variance, softmax's
# sum of exponentials, ReduceMean/ReduceSum, and top-k's comparisons of near-equal log-probs.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE", "TOPK")
# ONNX ops whose layers stay fp32 whatever layer types TensorRT makes of them (LogSoftmax becomes a softmax
# and a log); the ONNX parser names each layer after its ONNX node, adding _N to make names unique.
FP32_ONNX_OPS = ("LayerNormalization", "Softmax", "LogSoftmax", "TopK", "ReduceMean", "ReduceSum", "Pow")
_OP_NAME = re.compile(r"(^|/)(" + "|".join(FP32_ONNX_OPS) + r")(_\d+)*$")
# A LayerNorm exported as elementwise ops (older opsets) lives in a module named *norm*: /opt/ffn_norm/Sub.
_NORM_MODULE = re.compile(r"norm[^/]*/", re.IGNORECASE)
_ELEMENTWISE = ("ELEMENTWISE", "UNARY")
_NEVER_CONSTRAINED = ("CONSTANT", "SHAPE")  # weights take their consumer's type; shapes are integers
_FLOAT_TYPES = ("FLOAT", "HALF", "BF16")


def build_settings(graph: str, precision: str, calibration_sha256: str | None = None) -> dict:
    """The build configuration of graph `graph` in a `precision` build (PRECISIONS), as JSON-able data."""
    if precision not in PRECISIONS:
        raise ValueError(f"engine precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision in ("int8", "int4") and graph == QUANTIZED_LLM:
        return {"precision": precision, "tf32": False, "fp16": False, "strongly_typed": True, "fp32_layers": None,
                "quantize": quantize_recipe(precision, calibration_sha256, FP32_ONNX_OPS)}
    if precision == "fp32" or graph not in QUANTIZED_GRAPHS:
        return {"precision": "fp32", "tf32": False, "fp16": False, "strongly_typed": False, "fp32_layers": None,
                "quantize": None}
    return {"precision": "fp16", "tf32": False, "fp16": True, "strongly_typed": False,
            "fp32_layers": {"types": list(FP32_LAYER_TYPES), "onnx_ops": list(FP32_ONNX_OPS),
                            "norm_modules": True, "head": True, "constraints": "obey"},
            "quantize": None}


@dataclass(frozen=True)
class Layer:
    """What the fp32 selection needs of one network layer."""

    type: str  # trt.LayerType name: "NORMALIZATION", "MATRIX_MULTIPLY", ...
    name: str  # the ONNX node's name, made unique by the parser
    float_outputs: tuple[int, ...] = (0,)  # indices of its floating-point outputs


def fp32_layers(layers: list[Layer]) -> dict[int, str]:
    """Index -> why, for every layer an fp16 engine keeps in fp32.

    The head is every layer after the last NORMALIZATION, in network order (the parser adds layers in the
    ONNX graph's topological order): for the LLM that is the final layer norm's consumers, the vocabulary
    projection, log-softmax, the Add after it and top-k, whose ranking of near-equal tokens fp16 can swap.
    """
    norms = [i for i, layer in enumerate(layers) if layer.type == "NORMALIZATION"]
    head_start = norms[-1] + 1 if norms else len(layers)
    chosen = {}
    for index, layer in enumerate(layers):
        if not layer.float_outputs or layer.type in _NEVER_CONSTRAINED:
            continue
        if layer.type in FP32_LAYER_TYPES:
            chosen[index] = f"layer type {layer.type}"
        elif _OP_NAME.search(layer.name):
            chosen[index] = "ONNX op kept fp32"
        elif layer.type in _ELEMENTWISE and _NORM_MODULE.search(layer.name):
            chosen[index] = "inside a norm module"
        elif index >= head_start:
            chosen[index] = "head after the last norm"
    return chosen


def network_layers(network, trt) -> list[Layer]:
    """The layers of a parsed TensorRT network, as fp32_layers() reads them."""
    layers = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        floats = tuple(j for j in range(layer.num_outputs) if layer.get_output(j).dtype.name in _FLOAT_TYPES)
        layers.append(Layer(layer.type.name, layer.name, floats))
    return layers


def network_flags(settings: dict, trt) -> int:
    """create_network()'s flags: strongly typed for Q/DQ graphs (explicit quantization), else none."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if settings["strongly_typed"] else 0


def configure(config, network, settings: dict, trt) -> list[str]:
    """Apply `settings` to a builder config and its parsed network; returns the names of the fp32-pinned layers."""
    if not settings["tf32"]:
        config.clear_flag(trt.BuilderFlag.TF32)
    if settings["fp16"]:
        config.set_flag(trt.BuilderFlag.FP16)
    if not settings["fp32_layers"]:
        return []
    layers = network_layers(network, trt)
    chosen = fp32_layers(layers)
    for index in chosen:
        layer = network.get_layer(index)
        layer.precision = trt.float32
        for output in layers[index].float_outputs:
            layer.set_output_type(output, trt.float32)
    # OBEY, not PREFER: a constraint the builder may drop is one the parity check can't rely on.
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return [layers[index].name for index in chosen]
