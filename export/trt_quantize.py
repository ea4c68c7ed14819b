"""The LLM graph quantized for TensorRT by NVIDIA's ModelOpt (modelopt.onnx.quantization): Q/DQ ONNX.

TensorRT cannot build the bundle's own --quantize graphs: their weights sit in ONNX Runtime's
com.microsoft MatMulNBits, an op outside the ONNX standard that TensorRT 10's ONNX parser does not import.
ModelOpt writes the standard QuantizeLinear/DequantizeLinear form that TensorRT's explicit quantization reads.

  int4   weight-only, block-wise INT4 MatMul weights with fp16 activations (W4A16). With --calibration-data,
         AWQ (awq_lite) chooses the scales from the activations it sees; without, round-to-nearest (rtn_dq),
         which needs no calibration.
  int8   INT8 weights AND activations (TensorRT's INT8 is not weight-only): the activation scales come from
         entropy calibration, so --calibration-data is required; random inputs would give random scales.

Calibration runs the fp32 LLM graph in ONNX Runtime over the calibration inputs: on its CUDA execution provider
where onnxruntime-gpu is installed, otherwise on the CPU. The layers after the final layer norm (vocabulary
projection, log-softmax, top-k) are not quantized, and FP32_ONNX_OPS stay fp32 in the fp16 remainder.
"""
import re
from pathlib import Path

import numpy as np

MODELOPT_INSTALL = 'pip install "nvidia-modelopt[onnx]"'
CALIBRATION_METHOD = {("int4", True): "awq_lite", ("int4", False): "rtn_dq", ("int8", True): "entropy"}


def modelopt_unavailable() -> str | None:
    """Why ModelOpt's ONNX quantization cannot run here, or None when it can."""
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError as error:
        return f"int8 and int4 engines need NVIDIA ModelOpt ({MODELOPT_INSTALL}): {error}"
    return None


def quantize_recipe(precision: str, calibration_sha256: str | None, fp32_ops: tuple[str, ...]) -> dict:
    """The ModelOpt settings of an int8 / int4 LLM graph; part of its build settings, so a change rebuilds."""
    method = CALIBRATION_METHOD.get((precision, calibration_sha256 is not None))
    if method is None:
        raise ValueError(f"{precision} engines quantize the LLM's activations too, so they need real activation "
                         "ranges: pass --calibration-data FILE.npz (the llm graph's inputs), or build int4 "
                         "(weight-only, round-to-nearest without calibration)")
    return {"tool": "modelopt.onnx.quantization", "mode": precision, "method": method,
            "calibration_sha256": calibration_sha256, "op_types": ["MatMul"], "activations": "fp16",
            "fp32_ops": list(fp32_ops), "excluded": "head after the final LayerNormalization"}


def calibration_eps(providers: list[str]) -> list[str]:
    """ModelOpt's calibration execution providers: ONNX Runtime's CUDA one where present, the CPU always."""
    return (["cuda:0"] if "CUDAExecutionProvider" in providers else []) + ["cpu"]


def head_nodes(nodes) -> list[str]:
    """Names of the ONNX nodes after the graph's last LayerNormalization (nodes are in topological order)."""
    norms = [i for i, node in enumerate(nodes) if node.op_type == "LayerNormalization"]
    return [node.name for node in nodes[norms[-1] + 1:]] if norms else []


def read_calibration(path: Path, input_names: list[str]) -> dict[str, np.ndarray]:
    """The calibration inputs in `path` (.npz, one array per llm input name), checked against the graph."""
    try:
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"--calibration-data {path} is not a readable .npz file ({error}): save one with "
                         "numpy.savez(path, **inputs), one array per llm graph input") from error
    missing = sorted(set(input_names) - set(arrays))
    if missing:
        raise ValueError(f"--calibration-data {path} lacks the llm graph inputs {missing}: it needs one array "
                         f"per input ({', '.join(input_names)})")
    return {name: arrays[name] for name in input_names}


def quantize_with_modelopt(source: Path, target: Path, recipe: dict, calibration: Path | None,
                           input_names: list[str]) -> None:
    """Write ModelOpt's Q/DQ version of the ONNX graph `source` to `target` (weights beside it)."""
    import onnx
    import onnxruntime
    from modelopt.onnx.quantization import quantize

    nodes = onnx.load(str(source), load_external_data=False).graph.node
    data = read_calibration(calibration, input_names) if calibration else None
    # nodes_to_exclude are regular expressions matched from the start: anchor each name so /opt/MatMul_4
    # does not exclude /opt/MatMul_40 too.
    excluded = [re.escape(name) + "$" for name in head_nodes(nodes)]
    quantize(str(source), quantize_mode=recipe["mode"], calibration_data=data, calibration_method=recipe["method"],
             calibration_eps=calibration_eps(onnxruntime.get_available_providers()),
             op_types_to_quantize=recipe["op_types"], op_types_to_exclude_fp16=recipe["fp32_ops"],
             nodes_to_exclude=excluded, high_precision_dtype=recipe["activations"], use_external_data_format=True,
             output_path=str(target))
    if not Path(target).is_file():
        raise RuntimeError(f"ModelOpt wrote no {Path(target).name} (see its log above)")
