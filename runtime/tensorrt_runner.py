"""Runs a bundle's graphs with TensorRT engines built by python -m export.trt.

BUNDLE/engines/engines.json names one engine per graph with the cache key it was built under. An
engine is only used where this machine would build it with the same key (TensorRT version, GPU
name and compute capability, precision, profile shapes, ONNX file); anything else is an error that
names the command to rebuild. Device buffers are torch CUDA tensors on a stream of each engine's
own: torch comes with the GPU stack on the robots, and its caching allocator makes per-call
allocation (shapes change every decode step) cheap. The outputs asked for come back to numpy after
every call, as the runner interface asks; keeping the KV cache on the GPU between steps would save copies.
"""
import hashlib
import json
from pathlib import Path

import numpy as np

from runtime.bundle import Bundle, BundleError

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

    def _address(self, tensor) -> int:
        return tensor.data_ptr() if tensor.numel() else self.placeholder.data_ptr()

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """The engine's outputs; only those named in `outputs`, in that order, come back to numpy when given."""
        torch = self.torch
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise ValueError(f"{self.name}: feeds lack inputs {missing}")
        unknown = [n for n in outputs or () if n not in self.output_names]
        if unknown:
            raise ValueError(f"{self.name}: the engine has no outputs {unknown} (it has {self.output_names})")
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            held = []  # the inputs' device tensors must live until the execution below has finished
            for name in self.input_names:
                array = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])  # int64 ids stay int64 in TRT 10
                if not self.context.set_input_shape(name, array.shape):
                    low, _, high = self.engine.get_tensor_profile_shape(name, 0)
                    raise ValueError(f"{self.name}: input {name} has shape {array.shape}, outside the engine's "
                                     f"profile {tuple(low)}..{tuple(high)}: rebuild with python -m export.trt "
                                     "and a larger --max-batch / --max-regions / --max-new-tokens")
                tensor = torch.from_numpy(array).to(self.device)
                held.append(tensor)
                self.context.set_tensor_address(name, self._address(tensor))
            results = {}  # TensorRT writes every output; only the ones asked for are copied back
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                tensor = torch.empty(shape, dtype=_torch_dtype(torch, self.dtypes[name]), device=self.device)
                results[name] = tensor
                self.context.set_tensor_address(name, self._address(tensor))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.name}: TensorRT execution failed (see the TensorRT log above)")
            return [results[name].cpu().numpy() for name in outputs or self.output_names]  # .cpu() waits


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
        self.sessions = {name: EngineSession(path.read_bytes(), [spec.name for spec in graphs[name].outputs],
                                             device, name) for name, path in plans.items()}

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
