"""One external-data file per graph: `<graph>.onnx` (the graph, small) beside `<graph>.onnx.data` (its weights).

`attach_weights` is how export/onnx.py writes a graph. torch.onnx.export, asked for the graph alone (no parameters,
no constant folding), leaves every weight as a graph input named after its parameter; the weights are then written
one at a time from the torch module into the graph's data file, and each `Transpose` (or `Identity`) of a weight
is applied to it on the way, so the graph holds MatMul weights as initializers, as a folded export would. Left
to itself the exporter keeps a folded copy of every weight and a serialized one besides the module's: about
three times a graph's weights at once (measured: 1.6 GB of OPT weights peaked at 7.0 GB), which rules out
OPT-2.7B's 10.6 GB on a 24 GB machine. Written this way a graph's weights are never in memory twice.

`gather_weights` streams the tensors of an ONNX file that already has them, inline or in torch's per-weight files,
into one data file named after the graph (the reduced-precision rewrites of export/quantize.py use it). Two
graphs therefore never share or overwrite each other's weight files (torch names them onnx__MatMul_16, ...).
"""
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
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


def _weight_chains(graph: onnx.GraphProto, weights: set[str]) -> dict[str, tuple[str, list]]:
    """Fold Identity and Transpose nodes whose input is a weight, removing them from `graph`: every name that now
    stands for a weight, with (the weight's name, the permutations to apply in order)."""
    chains = {name: (name, []) for name in weights}
    kept = []
    for node in graph.node:
        if node.op_type in ("Identity", "Transpose") and node.input[0] in chains:
            source, perms = chains[node.input[0]]
            if node.op_type == "Transpose":
                perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
                perms = perms + [perm]  # None: reverse the axes, as Transpose does without perm
            chains[node.output[0]] = (source, perms)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return chains


def attach_weights(exported: Path, weights: Mapping[str, "torch.Tensor"], out_dir: Path) -> list[Path]:
    """Rewrite the parameter-free graph at `exported` as out_dir/<name>, its inputs named in `weights` turned into
    initializers whose data (tensors of INLINE_BYTES or more) is written to out_dir/<name>.data one at a time.
    Returns the files written."""
    exported, out_dir = Path(exported), Path(out_dir)
    model = onnx.load(str(exported), load_external_data=False)
    graph = model.graph
    names = {tensor.name for tensor in graph.input} & set(weights)
    chains = _weight_chains(graph, names)
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    kept_inputs = [tensor for tensor in graph.input if tensor.name not in names]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    graph_path = out_dir / exported.name
    data_path = out_dir / data_file_name(exported.name)
    with open(data_path, "wb") as data:
        for name in [name for name in chains if name in used]:  # graph order: reads stay sequential
            source, perms = chains[name]
            if weights[source].is_meta:
                raise ValueError(f"{exported.name} uses {source}, which was not loaded: export/graphs.py's "
                                 "weight prefixes for this graph miss it")
            array = weights[source].detach().cpu().numpy()
            for perm in perms:
                array = array.transpose(perm)
            array = np.ascontiguousarray(array)  # a copy only where a Transpose was folded
            if array.nbytes < INLINE_BYTES:
                graph.initializer.append(numpy_helper.from_array(array, name))
                continue
            data.write(b"\0" * (-data.tell() % ALIGNMENT))
            offset = data.tell()
            data.write(memoryview(array.reshape(-1)).cast("B"))
            tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape)
            _point_at(tensor, data_path.name, offset, array.nbytes)
            graph.initializer.append(tensor)
            del array
    onnx.save_model(model, str(graph_path))
    if data_path.stat().st_size == 0:
        data_path.unlink()
        return [graph_path]
    return [graph_path, data_path]


def graph_files(graph_path: Path) -> list[Path]:
    """A graph's own files: the .onnx and, when it has one, its data file."""
    data = graph_path.with_name(data_file_name(graph_path.name))
    return [graph_path, data] if data.is_file() else [graph_path]
