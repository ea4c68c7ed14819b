"""export/external_data.py: each graph's weights in one data file of its own, whatever torch wrote."""
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import numpy_helper

from export.external_data import ALIGNMENT, attach_weights, gather_weights, graph_files


class Affine(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = torch.nn.Linear(64, 64)

    def forward(self, x):
        return self.linear(x) * 2.0


def export(module: torch.nn.Module, path, per_weight_files: bool) -> None:
    """As torch writes a graph over 2 GB: every weight in a file named after it, beside the graph."""
    torch.onnx.export(module, (torch.randn(2, 64),), str(path), input_names=["x"], output_names=["y"],
                      dynamo=False)
    if per_weight_files:
        model = onnx.load(str(path))
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=False,
                        size_threshold=0)


def run(path, x):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_two_graphs_whose_torch_weight_files_share_names_keep_their_own_weights(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    modules = {"first.onnx": Affine(0), "second.onnx": Affine(1)}
    for name, module in modules.items():
        scratch = tmp_path / f"scratch-{name}"
        scratch.mkdir()
        export(module, scratch / name, per_weight_files=True)
        gather_weights(scratch / name, bundle)
    x = np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)
    for name, module in modules.items():
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(run(bundle / name, x), expected, atol=1e-5)
    assert sorted(p.name for p in bundle.iterdir()) == ["first.onnx", "first.onnx.data", "second.onnx",
                                                        "second.onnx.data"]


@pytest.mark.parametrize("per_weight_files", [False, True], ids=["inline", "per-weight files"])
def test_every_weight_of_a_kilobyte_or_more_lands_page_aligned_in_the_graphs_data_file(tmp_path, per_weight_files):
    (tmp_path / "scratch").mkdir()
    (tmp_path / "out").mkdir()
    export(Affine(0), tmp_path / "scratch" / "g.onnx", per_weight_files)
    files = gather_weights(tmp_path / "scratch" / "g.onnx", tmp_path / "out")
    assert files == graph_files(tmp_path / "out" / "g.onnx")
    model = onnx.load(str(files[0]), load_external_data=False)
    external = {t.name: {e.key: e.value for e in t.external_data} for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL}
    assert "linear.weight" in external
    assert ("linear.bias" in external) == per_weight_files  # 256 bytes: left inline unless torch moved it out
    assert all(e["location"] == "g.onnx.data" and int(e["offset"]) % ALIGNMENT == 0 for e in external.values())
    loaded = onnx.load(str(files[0]))
    weight = next(numpy_helper.to_array(t) for t in loaded.graph.initializer if t.name == "linear.weight")
    np.testing.assert_array_equal(weight, Affine(0).linear.weight.detach().numpy())


def test_a_graph_without_large_weights_gets_no_data_file(tmp_path):
    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2.0

    (tmp_path / "scratch").mkdir()
    export(Double(), tmp_path / "scratch" / "g.onnx", per_weight_files=False)
    assert gather_weights(tmp_path / "scratch" / "g.onnx", tmp_path) == [tmp_path / "g.onnx"]
    assert graph_files(tmp_path / "g.onnx") == [tmp_path / "g.onnx"]


def test_a_weight_file_cut_short_is_an_error_naming_it(tmp_path):
    (tmp_path / "scratch").mkdir()
    export(Affine(0), tmp_path / "scratch" / "g.onnx", per_weight_files=True)
    weight_file = max((tmp_path / "scratch").iterdir(), key=lambda p: p.stat().st_size if p.suffix != ".onnx" else 0)
    weight_file.write_bytes(weight_file.read_bytes()[:100])
    with pytest.raises(ValueError, match="ends .* bytes early"):
        gather_weights(tmp_path / "scratch" / "g.onnx", tmp_path)


class Tied(torch.nn.Module):
    """One weight used transposed (a Linear), as it is (a gather), and once more under a second name."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.linear = torch.nn.Linear(64, 64)
        self.alias = self.linear.weight

    def forward(self, x, ids):
        return self.linear(x) + self.linear.weight[ids] + x @ self.alias


def export_graph_alone(module, args, path, input_names):
    torch.onnx.export(module, args, str(path), input_names=input_names, output_names=["y"], dynamo=False,
                      export_params=False, do_constant_folding=False)


def test_weights_attached_one_by_one_fold_the_transposes_and_match_torch(tmp_path):
    (tmp_path / "out").mkdir()
    module = Tied().eval()
    x, ids = torch.randn(3, 64), torch.tensor([1, 5, 63])
    export_graph_alone(module, (x, ids), tmp_path / "g.onnx", ["x", "ids"])
    weights = dict(module.named_parameters(remove_duplicate=False))
    files = attach_weights(tmp_path / "g.onnx", weights, tmp_path / "out")
    graph = onnx.load(str(files[0]), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["x", "ids"]
    initializers = {i.name for i in graph.initializer}
    assert not [n for n in graph.node if n.op_type in ("Transpose", "Identity") and n.input[0] in initializers]
    matmul_weights = [n.input[1] for n in graph.node if n.op_type == "MatMul"]
    assert matmul_weights and set(matmul_weights) <= initializers  # what MatMulNBits needs to quantize them
    session = onnxruntime.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module(x, ids).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy(), "ids": ids.numpy()})[0], expected, atol=1e-5)
    model = onnx.load(str(files[0]), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            assert int({e.key: e.value for e in tensor.external_data}["offset"]) % ALIGNMENT == 0


def test_a_weight_left_on_the_meta_device_is_named(tmp_path):
    (tmp_path / "out").mkdir()
    module = Affine(0).eval()
    export_graph_alone(module, (torch.randn(2, 64),), tmp_path / "g.onnx", ["x"])
    weights = dict(module.named_parameters())
    weights["linear.weight"] = torch.empty(64, 64, device="meta")
    with pytest.raises(ValueError, match="uses linear.weight, which was not loaded"):
        attach_weights(tmp_path / "g.onnx", weights, tmp_path / "out")
