"""Runs a bundle's graphs with TensorRT engines built by python -m export.trt.

BUNDLE/engines/engines.json names one engine per graph with the cache key it was built under. An
engine is only used where this machine would build it with the same key (TensorRT version, GPU
name and compute capability, precision, profile shapes, ONNX file); anything else is an error that
names the command to rebuild. Device buffers are torch CUDA tensors: torch comes with the GPU stack
on the robots, and its caching allocator makes per-call allocation cheap. run() takes numpy feeds and
returns numpy outputs, as the runner interface asks; decoding instead binds TorchCudaMemory's buffers
(runtime/device_memory.py), so that the KV cache stays on the GPU between steps.
"""
import hashlib
import json
from pathlib import Path

import numpy as np

from runtime.bundle import Bundle, BundleError
from runtime.device_memory import DeviceMemory, Transfers

ENGINES_DIR = "engines"
ENGINES_MANIFEST = "engines.json"
ENGINES_FORMAT = 1


def tensorrt_unavailable() -> str | None:
    """Why TensorRT engines cannot be built or run on this machine, or None when they can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install tensorrt from NVIDIA's index on the GPU machine)"
    import torch

    if not torch.cuda.is_available():
        return ("no CUDA GPU is visible to torch (torch.cuda.is_available() is False): build and run engines on "
                "the GPU that will run them, with a CUDA build of torch")
    return None


def engine_key(machine: dict, precision: str, profile: dict, graph_sha256: str) -> str:
    """The cache key of one engine: what TensorRT compiles for, and what it compiles.

    `machine` is machine_identity(); `profile` maps each input to its min/opt/max shapes; graph_sha256 is
    Manifest.graph_sha256, which covers the graph's weights file as well as its .onnx.
    """
    identity = {"tensorrt": machine["tensorrt"], "gpu": machine["gpu"],
                "compute_capability": machine["compute_capability"], "precision": precision,
                "profile": profile, "graph_sha256": graph_sha256}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def machine_identity(device: str = "cuda") -> dict:
    """TensorRT version, GPU name and compute capability of `device` (needs tensorrt and CUDA torch)."""
    import tensorrt
    import torch

    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return {"tensorrt": tensorrt.__version__, "gpu": torch.cuda.get_device_name(index),
            "compute_capability": f"{major}.{minor}"}


def read_engines_manifest(bundle_path: Path) -> dict | None:
    """BUNDLE/engines/engines.json, or None where no engines were built yet."""
    path = Path(bundle_path) / ENGINES_DIR / ENGINES_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON ({error}): rebuild the engines with "
                          f"python -m export.trt --ckpt CHECKPOINT --out {bundle_path}") from error
    if manifest.get("format") != ENGINES_FORMAT:
        raise BundleError(f"{path} says format {manifest.get('format')}, this runtime reads {ENGINES_FORMAT}: "
                          f"rebuild the engines with python -m export.trt --ckpt CHECKPOINT --out {bundle_path}")
    return manifest


def rebuild_command(bundle: Bundle) -> str:
    checkpoint = bundle.manifest.source.checkpoint
    checkpoint = (bundle.path / checkpoint) if checkpoint is not None else "CHECKPOINT"
    return f"python -m export.trt --ckpt {checkpoint} --out {bundle.path}"


def select_engines(bundle: Bundle, engines: dict | None, machine: dict) -> dict[str, Path]:
    """The engine file of every graph of `bundle`, where engines.json has one built for `machine`."""
    if engines is None:
        raise BundleError(f"bundle {bundle.path} has no TensorRT engines: build them with {rebuild_command(bundle)}")
    plans = {}
    for name, graph in bundle.manifest.graphs.items():
        entry = engines["graphs"].get(name)
        if entry is None:
            raise BundleError(f"bundle {bundle.path} has no TensorRT engine for graph {name!r}: build it with "
                              f"{rebuild_command(bundle)}")
        key = engine_key(machine, entry["precision"], entry["profile"], bundle.manifest.graph_sha256(name))
        if key != entry["key"]:
            raise BundleError(f"the {name} engine in {bundle.path} was built for {entry['gpu']} (compute "
                              f"{entry['compute_capability']}, TensorRT {entry['tensorrt']}) or for another ONNX "
                              f"graph or weights, not for this {machine['gpu']} (compute "
                              f"{machine['compute_capability']}, TensorRT {machine['tensorrt']}): rebuild with "
                              f"{rebuild_command(bundle)}")
        plans[name] = bundle.path / ENGINES_DIR / entry["file"]
        if not plans[name].is_file():
            raise BundleError(f"engine file {plans[name]} is missing: rebuild with {rebuild_command(bundle)}")
    return plans


class EngineSession:
    """One deserialized engine and its execution context: numpy feeds in, numpy outputs out."""

    def __init__(self, plan: bytes, output_names: list[str], device: str = "cuda", name: str = "engine"):
        import tensorrt as trt
        import torch

        self.trt, self.torch, self.name = trt, torch, name
        self.device = torch.device(device)
        self.output_names = output_names
        with torch.cuda.device(self.device):
            self.engine = trt.Runtime(tensorrt_logger()).deserialize_cuda_engine(plan)
            if self.engine is None:
                raise BundleError(f"TensorRT could not deserialize the {name} engine (built by another TensorRT "
                                  "version or corrupt): rebuild it with python -m export.trt")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)  # TensorRT syncs extra on the default stream
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.placeholder = torch.empty(1, dtype=torch.float32, device=self.device)  # address for empty tensors

    def address(self, tensor) -> int:
        return tensor.data_ptr() if tensor.numel() else self.placeholder.data_ptr()

    def set_inputs(self, inputs: dict[str, tuple[tuple[int, ...], int]]) -> None:
        """Bind every input as (shape, device address); the output shapes follow from them."""
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"{self.name}: feeds lack inputs {missing}")
        for name in self.input_names:
            shape, address = inputs[name]
            if not self.context.set_input_shape(name, tuple(shape)):
                low, _, high = self.engine.get_tensor_profile_shape(name, 0)
                raise ValueError(f"{self.name}: input {name} has shape {tuple(shape)}, outside the engine's "
                                 f"profile {tuple(low)}..{tuple(high)}: rebuild with python -m export.trt "
                                 "and a larger --max-batch / --max-regions / --max-new-tokens")
            self.context.set_tensor_address(name, address)

    def output_shape(self, name: str) -> tuple[int, ...]:
        """Output `name`'s shape for the inputs set last."""
        return tuple(self.context.get_tensor_shape(name))

    def execute(self, outputs: dict[str, int], stream=None) -> None:
        """Run on the inputs set last, writing each output to its device address (TensorRT writes every output,
        so each needs one), on `stream` (a torch CUDA stream; default: the engine's own)."""
        missing = [n for n in self.output_names if n not in outputs]
        if missing:
            raise ValueError(f"{self.name}: outputs {missing} have no buffer: TensorRT writes every output")
        for name in self.output_names:
            self.context.set_tensor_address(name, outputs[name])
        if not self.context.execute_async_v3((stream or self.stream).cuda_stream):
            raise RuntimeError(f"{self.name}: TensorRT execution failed (see the TensorRT log above)")

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """The engine's outputs; only those named in `outputs`, in that order, come back to numpy when given."""
        torch = self.torch
        unknown = [n for n in outputs or () if n not in self.output_names]
        if unknown:
            raise ValueError(f"{self.name}: the engine has no outputs {unknown} (it has {self.output_names})")
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"{self.name}: feeds lack inputs {missing}")
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            # int64 ids stay int64 in TRT 10; the device tensors must live until the execution has finished
            held = {name: torch.from_numpy(np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])).to(self.device)
                    for name in self.input_names}
            self.set_inputs({name: (tuple(tensor.shape), self.address(tensor)) for name, tensor in held.items()})
            results = {name: torch.empty(self.output_shape(name), dtype=_torch_dtype(torch, self.dtypes[name]),
                                         device=self.device) for name in self.output_names}
            self.execute({name: self.address(tensor) for name, tensor in results.items()})
            return [results[name].cpu().numpy() for name in outputs or self.output_names]  # .cpu() waits


class TorchCudaMemory(DeviceMemory):
    """torch CUDA tensors bound to the engines by address, every copy, gather and execution on one stream, so
    that they run in order without host synchronisation (a download waits for what came before it)."""

    def __init__(self, sessions: dict[str, EngineSession], device: str, transfers: Transfers | None = None):
        import torch

        super().__init__(transfers)
        self.torch, self.sessions, self.device = torch, sessions, torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self._scratch: dict[tuple[str, str], object] = {}  # outputs decoding drops (the logits), reused

    def _tensor(self, array):
        return array.buffer[:array.size].view(array.shape)

    def _allocate(self, capacity, dtype):
        with self.torch.cuda.stream(self.stream):
            return self.torch.empty(capacity, dtype=_torch_dtype(self.torch, dtype), device=self.device)

    def _upload(self, flat):
        with self.torch.cuda.stream(self.stream):
            return self.torch.from_numpy(flat).to(self.device)

    def _download(self, array):
        with self.torch.cuda.stream(self.stream):
            return self._tensor(array).cpu().numpy()

    def _gather(self, sources, rows, outputs):
        with self.torch.cuda.stream(self.stream):
            for source, output in zip(sources, outputs):
                self.torch.index_select(self._tensor(source), 0, self._tensor(rows), out=self._tensor(output))

    def run(self, graph, inputs, outputs):
        session, torch = self.sessions[graph], self.torch
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            session.set_inputs({name: (array.shape, array.buffer.data_ptr()) for name, array in inputs.items()})
            addresses = {}
            for name in session.output_names:
                shape = session.output_shape(name)
                if name in outputs:
                    if shape != outputs[name].shape:
                        raise ValueError(f"{graph}: output {name} has shape {shape} for these inputs, but the buffer "
                                         f"bound for it has shape {outputs[name].shape}")
                    addresses[name] = outputs[name].buffer.data_ptr()
                    continue
                scratch = self._scratch.get((graph, name))
                if scratch is None or tuple(scratch.shape) != shape:
                    scratch = self._scratch[graph, name] = torch.empty(
                        shape, dtype=_torch_dtype(torch, session.dtypes[name]), device=self.device)
                addresses[name] = session.address(scratch)
            session.execute(addresses, self.stream)

    def tensor_dtype(self, graph, name):
        return self.sessions[graph].dtypes[name]


class TensorRTRunner:
    """Runs each graph of `bundle` with its engine from BUNDLE/engines/engines.json."""

    backend = "tensorrt"

    def __init__(self, bundle: Bundle, device: str = "cuda"):
        if not str(device).startswith("cuda"):
            raise ValueError(f"device {device!r} is not supported by the tensorrt backend: TensorRT runs on a "
                             "CUDA GPU, use device 'cuda' (or backend 'onnxruntime' on CPU)")
        reason = tensorrt_unavailable()
        if reason:
            raise ValueError(f"backend 'tensorrt' cannot run here: {reason}; or use backend 'onnxruntime'")
        plans = select_engines(bundle, read_engines_manifest(bundle.path), machine_identity(device))
        graphs = bundle.manifest.graphs
        self.device = device
        self.sessions = {name: EngineSession(path.read_bytes(), [spec.name for spec in graphs[name].outputs],
                                             device, name) for name, path in plans.items()}

    def keeps_kv_on_device(self, num_beams: int) -> bool:
        return True  # across PCIe, the whole cache twice a step would dwarf the step itself

    def device_memory(self, transfers: Transfers | None = None) -> TorchCudaMemory:
        return TorchCudaMemory(self.sessions, self.device, transfers)

    def run(self, name: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """Graph `name`'s outputs (only those named in `outputs`, in that order, when given)."""
        return self.sessions[name].run(feeds, outputs)


def _torch_dtype(torch, dtype: np.dtype):
    return torch.from_numpy(np.empty(0, dtype)).dtype


_LOGGER = None


def tensorrt_logger():
    """The process's TensorRT logger (TensorRT keeps the first logger it is given)."""
    global _LOGGER
    if _LOGGER is None:
        import tensorrt as trt

        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER
