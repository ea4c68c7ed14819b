"""Runs a bundle's graphs with ONNX Runtime: one session per graph, created once."""
import numpy as np

from runtime.bundle import Bundle


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
        self.sessions = {name: onnxruntime.InferenceSession(str(bundle.graph_path(name)), options,
                                                            providers=providers)
                         for name in bundle.manifest.graphs}

    def run(self, name: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sessions[name].run(None, feeds)
