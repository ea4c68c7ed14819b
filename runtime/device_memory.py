"""Memory of the device that runs the graphs, for decoding whose KV cache never leaves it.

A DeviceMemory allocates flat buffers, copies arrays in and out (counting every byte in `transfers`),
gathers rows along the batch axis (beam search's reorder) and runs a graph on device arrays in place.
A DeviceArray is a shape over the first elements of one flat buffer, so a cache at any length up to
the buffer's capacity is a view, never a copy. Three kinds exist: NumpyMemory here (host memory
standing in for a device: the tests' memory, and a valid CPU path over any runner), ONNX Runtime's
OrtValues with IO binding (runtime/onnx_runner.py, CPU or CUDA) and torch CUDA tensors bound to
TensorRT engines (runtime/tensorrt_runner.py).
"""
import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Transfers:
    """Bytes copied between host and device memory, and how many of them each decode step moved."""

    to_device: int = 0
    to_host: int = 0
    decode_steps: int = 0  # LLM calls after the prefill
    decode_bytes: int = 0  # bytes both ways during those steps, their beam reorders included
    _mark: int = field(default=0, repr=False)

    @property
    def total(self) -> int:
        return self.to_device + self.to_host

    @property
    def bytes_per_step(self) -> float:
        """Mean host<->device bytes of one decode step (0 before any)."""
        return self.decode_bytes / self.decode_steps if self.decode_steps else 0.0

    def end_call(self, decode: bool) -> None:
        """Called after every LLM call. A decode step's bytes are those since the previous call ended, so that a
        beam reorder between two calls counts toward the step it prepares; the prefill's (the soft prompt) do not."""
        if decode:
            self.decode_steps += 1
            self.decode_bytes += self.total - self._mark
        self._mark = self.total


@dataclass(frozen=True)
class DeviceArray:
    """`shape` over the first elements of `buffer`, one memory's flat allocation of `capacity` elements."""

    buffer: Any  # numpy array, OrtValue or torch tensor, as the memory that made it allocates
    capacity: int
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def view(self, shape) -> "DeviceArray":
        """The first prod(shape) elements as `shape`: the same memory, nothing copied."""
        shape = tuple(int(n) for n in shape)
        if math.prod(shape) > self.capacity:
            raise ValueError(f"a view of shape {shape} needs {math.prod(shape)} elements, but its buffer holds "
                             f"{self.capacity}: allocate the buffer for the largest shape it must hold")
        return dataclasses.replace(self, shape=shape)


class DeviceMemory(ABC):
    """What the three kinds share: allocation sizes, transfer counting and argument checks. A kind implements the
    abstract methods: _allocate, _upload, _download, _gather, run and tensor_dtype."""

    def __init__(self, transfers: Transfers | None = None):
        self.transfers = transfers if transfers is not None else Transfers()

    def empty(self, shape, dtype, capacity: int | None = None) -> DeviceArray:
        """Uninitialised memory for `capacity` elements (default: the shape's), viewed as `shape`."""
        dtype = np.dtype(dtype)
        capacity = max(capacity or math.prod(shape), 1)  # a tensor of zero elements still needs an address
        return DeviceArray(self._allocate(capacity, dtype), capacity, dtype, tuple(shape))

    def upload(self, array: np.ndarray, dtype=None) -> DeviceArray:
        """A device copy of `array` (in `dtype`, when given)."""
        array = np.ascontiguousarray(array, dtype)
        self.transfers.to_device += array.nbytes
        if array.size == 0:
            return self.empty(array.shape, array.dtype)
        return DeviceArray(self._upload(array.reshape(-1)), array.size, array.dtype, array.shape)

    def download(self, array: DeviceArray) -> np.ndarray:
        """A host copy of `array` (a copy, since its buffer is written again by the next step)."""
        self.transfers.to_host += array.nbytes
        return self._download(array)

    def gather(self, sources: list[DeviceArray], rows: np.ndarray, outputs: list[DeviceArray]) -> None:
        """outputs[i] = sources[i][rows] along the batch axis, on the device: only `rows` crosses to it."""
        for source, output in zip(sources, outputs, strict=True):
            if output.shape != (len(rows), *source.shape[1:]) or output.dtype != source.dtype:
                raise ValueError(f"gathering {len(rows)} rows of a {source.dtype} {source.shape} array needs a "
                                 f"{source.dtype} output of shape {(len(rows), *source.shape[1:])}, not a "
                                 f"{output.dtype} {output.shape} one")
            if output.buffer is source.buffer:
                raise ValueError("a gather cannot write into the buffer it reads: gather into the other buffer "
                                 "of the pair, then swap")
        self._gather(sources, self.upload(rows, np.int64), outputs)

    @abstractmethod
    def _allocate(self, capacity: int, dtype: np.dtype) -> Any:
        """A flat buffer of `capacity` elements of `dtype`, uninitialised."""

    @abstractmethod
    def _upload(self, flat: np.ndarray) -> Any:
        """A device buffer holding a copy of the 1-D array `flat`."""

    @abstractmethod
    def _download(self, array: DeviceArray) -> np.ndarray:
        """A host copy of `array`."""

    @abstractmethod
    def _gather(self, sources: list[DeviceArray], rows: DeviceArray, outputs: list[DeviceArray]) -> None:
        """outputs[i] = sources[i][rows] along axis 0, on the device (arguments checked by gather)."""

    @abstractmethod
    def run(self, graph: str, inputs: dict[str, DeviceArray], outputs: dict[str, DeviceArray]) -> None:
        """Run `graph` on `inputs`, writing the outputs named in `outputs` into them; the graph's other outputs
        stay on the device and are dropped."""

    @abstractmethod
    def tensor_dtype(self, graph: str, name: str) -> np.dtype:
        """The dtype `graph` declares for its input or output `name`: what buffers bound to it must hold."""


class NumpyMemory(DeviceMemory):
    """Host memory standing in for a device, over any runner with run(graph, feeds, outputs). The graph's outputs
    are copied into the preallocated buffers (one host copy each), as a device would write them in place."""

    def __init__(self, runner, graphs: dict, transfers: Transfers | None = None):
        super().__init__(transfers)
        self.runner = runner
        self.dtypes = {name: {spec.name: np.dtype(spec.dtype) for spec in (*graph.inputs, *graph.outputs)}
                       for name, graph in graphs.items()}  # from the manifest's GraphSpecs

    @staticmethod
    def host(array: DeviceArray) -> np.ndarray:
        """The numpy view of `array` (no copy): what a test reads the stand-in device through."""
        return array.buffer[:array.size].reshape(array.shape)

    def _allocate(self, capacity, dtype):
        return np.empty(capacity, dtype)

    def _upload(self, flat):
        return flat.copy()

    def _download(self, array):
        return self.host(array).copy()

    def _gather(self, sources, rows, outputs):
        for source, output in zip(sources, outputs):
            np.take(self.host(source), self.host(rows), axis=0, out=self.host(output))

    def run(self, graph, inputs, outputs):
        results = self.runner.run(graph, {name: self.host(array) for name, array in inputs.items()}, list(outputs))
        for (name, output), result in zip(outputs.items(), results):
            if result.shape != output.shape:
                raise ValueError(f"graph {graph} returned {name} of shape {result.shape}, but the buffer bound for it "
                                 f"has shape {output.shape}")
            np.copyto(self.host(output), result)

    def tensor_dtype(self, graph, name):
        return self.dtypes[graph][name]
