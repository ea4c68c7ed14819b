"""One external-data file per graph: `<graph>.onnx` (the graph, small) beside `<graph>.onnx.data` (its weights).

torch.onnx.export writes a graph over protobuf's 2 GB limit as one file per weight, named after the weight,
beside the .onnx. Two large graphs exported into one folder therefore overwrite each other's weights (both call
theirs onnx__MatMul_16, ...). So each graph is exported alone into a scratch folder of its own, and then
`gather_weights` streams its weights, whether torch left them inline or in per-weight files, into one data file
named after the graph. Weights are copied in blocks: a graph's weights are never all in memory twice.
"""
import os
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import TensorProto
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from contract.manifest import GRAPH_DATA_SUFFIX

INLINE_BYTES = 1024  # smaller tensors (shapes, scalars) stay in the graph file, where the optimizer reads them
ALIGNMENT = 4096     # page-aligned offsets, so that a runtime may map the weights instead of copying them
BLOCK_BYTES = 64 << 20


def data_file_name(graph_file: str) -> str:
    return graph_file + GRAPH_DATA_SUFFIX


def _tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """Every tensor that can hold weights: initializers and node attributes (Constant), in subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def _copy_range(source: Path, offset: int, length: int, out) -> None:
    with open(source, "rb") as file:
        file.seek(offset)
        left = length
        while left:
            block = file.read(min(BLOCK_BYTES, left))
            if not block:
                raise ValueError(f"external data file {source} ends {left} bytes early: the export was cut short")
            out.write(block)
            left -= len(block)


def _point_at(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = TensorProto.EXTERNAL


def gather_weights(exported: Path, out_dir: Path) -> list[Path]:
    """Rewrite the graph at `exported` (with any per-weight files beside it) as out_dir/<name> and
    out_dir/<name>.data, every tensor of INLINE_BYTES or more in the data file. Returns the files written."""
    exported, out_dir = Path(exported), Path(out_dir)
    model = onnx.load(str(exported), load_external_data=False)
    graph_path = out_dir / exported.name
    data_path = out_dir / data_file_name(exported.name)
    with open(data_path, "wb") as data:
        for tensor in _tensors(model.graph):
            if uses_external_data(tensor):
                info = ExternalDataInfo(tensor)
                source, start = exported.parent / info.location, info.offset or 0
                length = info.length if info.length is not None else os.path.getsize(source) - start
            elif tensor.HasField("raw_data") and len(tensor.raw_data) >= INLINE_BYTES:
                source, start, length = None, 0, len(tensor.raw_data)
            else:
                continue
            data.write(b"\0" * (-data.tell() % ALIGNMENT))
            offset = data.tell()
            if source is None:
                data.write(tensor.raw_data)
            else:
                _copy_range(source, start, length, data)
            tensor.ClearField("raw_data")
            _point_at(tensor, data_path.name, offset, length)
    onnx.save_model(model, str(graph_path))
    if data_path.stat().st_size == 0:
        data_path.unlink()
        return [graph_path]
    return [graph_path, data_path]


def graph_files(graph_path: Path) -> list[Path]:
    """A graph's own files: the .onnx and, when it has one, its data file."""
    data = graph_path.with_name(data_file_name(graph_path.name))
    return [graph_path, data] if data.is_file() else [graph_path]
