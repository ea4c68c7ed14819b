"""Runs a bundle's graphs with ONNX Runtime: one session per graph, created once.

OrtMemory is ONNX Runtime's device memory (runtime/device_memory.py): OrtValues on the session's device,
bound to the graphs with IO binding, so that decoding keeps the KV cache on a CUDA GPU between steps. On
CPU the same code runs with device 'cpu'.
"""
from pathlib import Path

import numpy as np

from contract.manifest import REEXPORT
from runtime.bundle import Bundle, BundleError
from runtime.device_memory import DeviceArray, DeviceMemory, Transfers

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(bool)": np.bool_}


class OnnxRunner:
    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int | None = None):
        import onnxruntime

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device {device!r} is not supported: use 'cpu' or 'cuda'")
        self.device = device
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
        # Each session has a thread pool of its own, whose threads spin for a while after each run: a bundle's
        # sessions (vision, Q-Former, LLM) take turns, so the idle pools' spinning took the cores from the busy
        # one. Without spinning, the bench preset's 16-region frame took 361-396 ms on 2 threads against 536-559
        # ms (vision 20-23 ms against 48-65, Q-Former 27-33 against 87-93; issue #19).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.options, self.providers = options, providers
        self.sessions = {name: _session(bundle.graph_path(name), options, providers)
                         for name in bundle.manifest.graphs}

    def keeps_kv_on_device(self, num_beams: int) -> bool:
        """Whether decoding should bind its KV cache in ONNX Runtime's memory (OrtMemory) rather than feed numpy.
        On a GPU always. On CPU, measured at the bench preset with 1 thread (issue #17, ms/token, numpy feeds vs
        IO binding): greedy the same (16 regions: 25.8 vs 26.0), so greedy keeps the feeds; beam search faster
        bound, since its numpy reorder copies the whole cache (4 beams x 8 regions: 62.9 vs 55.6; 5 x 16: 126 vs
        114)."""
        return self.device == "cuda" or num_beams > 1

    def device_memory(self, transfers: Transfers | None = None) -> "OrtMemory":
        return OrtMemory(self.sessions, self.device, self.options, self.providers, transfers)

    def run(self, name: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """Graph `name`'s outputs (only those named in `outputs`, in that order, when given)."""
        return self.sessions[name].run(outputs, feeds)


class OrtMemory(DeviceMemory):
    """OrtValues on `device` ('cpu' or 'cuda'), bound to the sessions' graphs by IO binding. A view is bound by
    address and shape, so a cache at any length is its buffer's first elements; the gather runs as a one-node
    ONNX graph on the same execution provider."""

    def __init__(self, sessions: dict, device: str, options, providers: list[str], transfers: Transfers | None = None):
        import onnxruntime

        super().__init__(transfers)
        self.ort, self.sessions, self.device = onnxruntime, sessions, device
        self.options, self.providers = options, providers
        self._gathers: dict[tuple[int, str], object] = {}  # (tensor count, dtype) -> session
        self._dtypes = {graph: {arg.name: np.dtype(_ORT_TYPES[arg.type])
                                for arg in (*session.get_inputs(), *session.get_outputs())}
                        for graph, session in sessions.items()}

    def _allocate(self, capacity, dtype):
        return self.ort.OrtValue.ortvalue_from_shape_and_type([capacity], dtype, self.device, 0)

    def _upload(self, flat):
        # On CPU an OrtValue wraps the numpy array it is made from: copy it, so that the caller may reuse its own.
        return self.ort.OrtValue.ortvalue_from_numpy(flat.copy() if self.device == "cpu" else flat, self.device, 0)

    def _download(self, array):
        host = array.buffer.numpy()[:array.size].reshape(array.shape)  # a CUDA value copies, a CPU one is shared
        return host.copy() if self.device == "cpu" else host

    def _bind(self, binding, name: str, array: DeviceArray, output: bool) -> None:
        bind = binding.bind_output if output else binding.bind_input
        bind(name, self.device, 0, array.dtype, list(array.shape), array.buffer.data_ptr())

    def _execute(self, session, inputs: dict[str, DeviceArray], outputs: dict[str, DeviceArray]) -> None:
        binding = session.io_binding()
        for name, array in inputs.items():
            self._bind(binding, name, array, output=False)
        for name, array in outputs.items():
            self._bind(binding, name, array, output=True)
        session.run_with_iobinding(binding)

    def run(self, graph, inputs, outputs):
        self._execute(self.sessions[graph], inputs, outputs)

    def _gather(self, sources, rows, outputs):
        session = self._gather_session(len(sources), sources[0].dtype)
        self._execute(session, {"rows": rows, **{f"source_{i}": source for i, source in enumerate(sources)}},
                      {f"gathered_{i}": output for i, output in enumerate(outputs)})

    def _gather_session(self, count: int, dtype: np.dtype):
        """One ONNX Gather (axis 0) per tensor, all in one graph, so that a reorder is one call."""
        key = count, dtype.name
        if key not in self._gathers:
            from onnx import TensorProto, helper

            element = helper.np_dtype_to_tensor_dtype(dtype)
            axes = ["rows", "heads", "length", "head_dim"]
            graph = helper.make_graph(
                [helper.make_node("Gather", [f"source_{i}", "rows"], [f"gathered_{i}"], axis=0) for i in range(count)],
                "gather_rows",
                [helper.make_tensor_value_info("rows", TensorProto.INT64, ["picked"]),
                 *(helper.make_tensor_value_info(f"source_{i}", element, axes) for i in range(count))],
                [helper.make_tensor_value_info(f"gathered_{i}", element, ["picked", *axes[1:]]) for i in range(count)])
            # IR 8 and opset 13: what every ONNX Runtime since 1.10 reads, on the robot as here.
            model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 13)])
            self._gathers[key] = self.ort.InferenceSession(model.SerializeToString(), self.options,
                                                           providers=self.providers)
        return self._gathers[key]

    def tensor_dtype(self, graph, name):
        return self._dtypes[graph][name]


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
