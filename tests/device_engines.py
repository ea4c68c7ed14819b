"""A GraphEngine with its KV cache in device memory and one feeding numpy, over the same runner: what the device-KV
tests compare. `kind`: "onnxruntime io binding" (OrtMemory) or "numpy stand-in" (NumpyMemory)."""
from runtime.device_memory import NumpyMemory
from runtime.graph_engine import GraphEngine
from runtime.onnx_runner import OrtMemory

KINDS = ["onnxruntime io binding", "numpy stand-in"]


def device_and_host(bundle, runner, kind: str) -> tuple[GraphEngine, GraphEngine]:
    device = GraphEngine(bundle, runner, device_kv=True)
    if kind == "numpy stand-in":
        device.memory = NumpyMemory(runner, bundle.manifest.graphs, device.transfers)
    else:
        assert isinstance(device.memory, OrtMemory)
    return device, GraphEngine(bundle, runner, device_kv=False)
