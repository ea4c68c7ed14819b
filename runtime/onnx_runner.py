"""Runs a bundle's graphs with ONNX Runtime: one session per graph, created once."""
from pathlib import Path

import numpy as np

from contract.manifest import REEXPORT
from runtime.bundle import Bundle, BundleError


class OnnxRunner:
    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int | None = None):
        import onnxruntime

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device {device!r} is not supported: use 'cpu' or 'cuda'")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ValueError("device 'cuda' needs onnxruntime-gpu (pip install onnxruntime-gpu in place of "
                                 "onnxruntime), or use device 'cpu'")
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        self.sessions = {name: _session(bundle.graph_path(name), options, providers)
                         for name in bundle.manifest.graphs}

    def run(self, name: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """Graph `name`'s outputs (only those named in `outputs`, in that order, when given)."""
        return self.sessions[name].run(outputs, feeds)


def _session(path: Path, options, providers: list[str]):
    """An ONNX Runtime session for the graph at `path`; BundleError naming the file when ONNX Runtime cannot
    load it (a file that was cut short or altered, and re-hashed, passes the manifest's sha256 check)."""
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoSuchFile, ort_errors.Fail,
            ort_errors.NotImplemented) as error:
        reason = " ".join(str(error).split(" : ")[-1].split())  # without ONNX Runtime's "[...] : 7 : NAME : "
        raise BundleError(f"ONNX Runtime cannot load bundle graph {path} ({type(error).__name__}: {reason}): the "
                          f"file is damaged or from an incompatible exporter; {REEXPORT}") from error
