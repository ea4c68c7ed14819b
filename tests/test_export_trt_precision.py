"""python -m export.trt's precisions: each graph's build settings, the fp32 layers of fp16 engines, int8 / int4.

TensorRT and ModelOpt are absent here. The settings and the layer selection are pure functions, specified
directly; configure() is run against a stand-in of the few TensorRT calls it makes (flags, layer precision,
output types), which proves what it asks of TensorRT, never what TensorRT then builds. The `tensorrt` test
at the end builds real engines where TensorRT is installed.
"""
import json
import shutil
import sys
import types

import numpy as np
import pytest

from export.trt import main
from export.trt_build import build_engines
from export.trt_precision import Layer, build_settings, configure, fp32_layers, network_flags
from export.trt_profiles import Limits, derive_profiles
from export.trt_quantize import calibration_eps, head_nodes, read_calibration
from runtime.bundle import load_bundle
from runtime.tensorrt_runner import ENGINES_DIR, read_engines_manifest
from tensorrt_double import DoubleToolchain

GRAPHS = ("vision", "point_encoder", "qformer_image", "qformer_image_region", "qformer_pointcloud",
          "qformer_pointcloud_region", "llm")
QFORMER_AND_POINTS = [name for name in GRAPHS if name not in ("vision", "llm")]


# Build settings

@pytest.mark.parametrize("precision", ["fp32", "fp16", "int4"])
def test_every_build_clears_tf32(precision):
    assert {build_settings(name, precision)["tf32"] for name in GRAPHS} == {False}


def test_an_fp32_build_sets_no_reduced_precision_anywhere():
    for name in GRAPHS:
        settings = build_settings(name, "fp32")
        assert (settings["precision"], settings["fp16"], settings["fp32_layers"], settings["quantize"]) == (
            "fp32", False, None, None)


def test_an_fp16_build_keeps_the_qformer_and_the_point_encoder_fp32():
    assert {name: build_settings(name, "fp16")["precision"] for name in GRAPHS} == {
        **{name: "fp32" for name in QFORMER_AND_POINTS}, "vision": "fp16", "llm": "fp16"}


def test_fp16_graphs_obey_fp32_constraints_on_norms_softmax_reductions_and_the_head():
    settings = build_settings("llm", "fp16")
    assert settings["fp16"] and not settings["strongly_typed"]
    assert settings["fp32_layers"] == {
        "types": ["NORMALIZATION", "SOFTMAX", "REDUCE", "TOPK"],
        "onnx_ops": ["LayerNormalization", "Softmax", "LogSoftmax", "TopK", "ReduceMean", "ReduceSum", "Pow"],
        "norm_modules": True, "head": True, "constraints": "obey"}


def test_an_int4_build_quantizes_only_the_llm_in_a_strongly_typed_network():
    llm = build_settings("llm", "int4")
    assert (llm["precision"], llm["strongly_typed"], llm["fp16"], llm["fp32_layers"]) == ("int4", True, False, None)
    assert llm["quantize"]["method"] == "rtn_dq" and llm["quantize"]["activations"] == "fp16"
    assert build_settings("vision", "int4")["precision"] == "fp16"
    assert {build_settings(name, "int4")["precision"] for name in QFORMER_AND_POINTS} == {"fp32"}


def test_calibration_data_turns_int4_into_awq_and_is_part_of_the_settings():
    recipe = build_settings("llm", "int4", calibration_sha256="c" * 64)["quantize"]
    assert (recipe["method"], recipe["calibration_sha256"]) == ("awq_lite", "c" * 64)
    assert build_settings("llm", "int8", calibration_sha256="c" * 64)["quantize"]["method"] == "entropy"


def test_int8_without_calibration_is_refused_naming_the_alternatives():
    with pytest.raises(ValueError, match="pass --calibration-data FILE.npz .* or build int4"):
        build_settings("llm", "int8")


def test_an_unknown_engine_precision_is_refused():
    with pytest.raises(ValueError, match="engine precision 'bf16' is not one of fp32, fp16, int8, int4"):
        build_settings("llm", "bf16")


# Which layers an fp16 engine keeps in fp32, on a stand-in of the tiny LLM's parsed network

LLM_LAYERS = [
    Layer("CONSTANT", "/opt/Constant_1"),
    Layer("GATHER", "/opt/embed_tokens/Gather"),
    Layer("NORMALIZATION", "/opt/attention_norm/LayerNormalization"),
    Layer("MATRIX_MULTIPLY", "/opt/q_proj/MatMul"),
    Layer("SOFTMAX", "/opt/Softmax"),
    Layer("ELEMENTWISE", "/opt/ffn_norm/Pow"),
    Layer("ELEMENTWISE", "/opt/ffn_norm/Sub"),
    Layer("REDUCE", "/opt/ffn_norm/ReduceMean"),
    Layer("ELEMENTWISE", "/opt/Add_19"),
    Layer("ACTIVATION", "/opt/activation_1/Relu"),
    Layer("SHAPE", "/opt/Shape_3", float_outputs=()),
    Layer("NORMALIZATION", "/opt/final_layer_norm/LayerNormalization"),
    Layer("MATRIX_MULTIPLY", "/opt/MatMul_4"),
    Layer("SOFTMAX", "/LogSoftmax"),
    Layer("UNARY", "/LogSoftmax_1"),
    Layer("ELEMENTWISE", "/Add"),
    Layer("CONSTANT", "/Constant"),
    Layer("TOPK", "/TopK", float_outputs=(0,)),
    Layer("GATHER_ELEMENTS", "/GatherElements", float_outputs=()),
]


def test_norms_softmax_reductions_pow_and_the_head_are_kept_fp32_and_nothing_else():
    chosen = fp32_layers(LLM_LAYERS)
    assert {LLM_LAYERS[i].name: why for i, why in chosen.items()} == {
        "/opt/attention_norm/LayerNormalization": "layer type NORMALIZATION",
        "/opt/Softmax": "layer type SOFTMAX",
        "/opt/ffn_norm/Pow": "ONNX op kept fp32",
        "/opt/ffn_norm/Sub": "inside a norm module",
        "/opt/ffn_norm/ReduceMean": "layer type REDUCE",
        "/opt/final_layer_norm/LayerNormalization": "layer type NORMALIZATION",
        "/opt/MatMul_4": "head after the last norm",
        "/LogSoftmax": "layer type SOFTMAX",
        "/LogSoftmax_1": "ONNX op kept fp32",
        "/Add": "head after the last norm",
        "/TopK": "layer type TOPK",
    }


def test_a_network_without_a_norm_layer_has_no_head():
    layers = [Layer("MATRIX_MULTIPLY", "/fc/MatMul"), Layer("ELEMENTWISE", "/Pow_2"), Layer("ELEMENTWISE", "/Add")]
    assert fp32_layers(layers) == {1: "ONNX op kept fp32"}


class FakeTensorRT:
    """The names configure() uses from the tensorrt module, as plain values."""

    float32 = "float32"
    BuilderFlag = types.SimpleNamespace(TF32="TF32", FP16="FP16", OBEY_PRECISION_CONSTRAINTS="OBEY")
    NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)


class FakeConfig:
    def __init__(self):
        self.flags = {"TF32"}  # TensorRT's default

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)


class FakeNetwork:
    def __init__(self, layers):
        self.layers = [_FakeLayer(layer) for layer in layers]
        self.num_layers = len(layers)

    def get_layer(self, index):
        return self.layers[index]


class _FakeLayer:
    def __init__(self, layer):
        self.type, self.name = types.SimpleNamespace(name=layer.type), layer.name
        self.num_outputs = max(layer.float_outputs, default=0) + 1
        self._floats, self.precision, self.output_types = layer.float_outputs, None, {}

    def get_output(self, index):
        return types.SimpleNamespace(dtype=types.SimpleNamespace(name="FLOAT" if index in self._floats else "INT32"))

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


def test_configure_pins_the_chosen_layers_and_obeys_the_constraints():
    config, network = FakeConfig(), FakeNetwork(LLM_LAYERS)
    pinned = configure(config, network, build_settings("llm", "fp16"), FakeTensorRT)
    assert config.flags == {"FP16", "OBEY"}
    assert pinned == [LLM_LAYERS[i].name for i in sorted(fp32_layers(LLM_LAYERS))]
    for layer in network.layers:
        expected = "float32" if layer.name in pinned else None
        assert layer.precision == expected, layer.name
    assert network.layers[17].output_types == {0: "float32"}  # top-k values fp32; its int32 ids untouched


def test_configure_of_an_fp32_graph_only_clears_tf32():
    config, network = FakeConfig(), FakeNetwork(LLM_LAYERS)
    assert configure(config, network, build_settings("qformer_image", "fp16"), FakeTensorRT) == []
    assert config.flags == set() and {layer.precision for layer in network.layers} == {None}


def test_only_quantized_graphs_get_a_strongly_typed_network():
    assert network_flags(build_settings("llm", "int4"), FakeTensorRT) == 1
    assert network_flags(build_settings("llm", "fp16"), FakeTensorRT) == 0


# ModelOpt's inputs (ModelOpt itself runs on the GPU machine)

def test_the_head_left_unquantized_is_everything_after_the_llms_final_layer_norm(tiny_bundle):
    import onnx

    nodes = onnx.load(str(tiny_bundle / "llm.onnx"), load_external_data=False).graph.node
    head = [name for name in head_nodes(nodes) if "Constant" not in name]
    assert head == ["/opt/MatMul_4", "/LogSoftmax", "/Add", "/Reshape", "/TopK", "/GatherElements"]


def test_calibration_runs_on_cuda_where_onnxruntime_has_it_and_otherwise_on_the_cpu():
    assert calibration_eps(["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["cuda:0", "cpu"]
    assert calibration_eps(["CPUExecutionProvider"]) == ["cpu"]


def test_calibration_data_must_hold_every_llm_input(tmp_path):
    np.savez(tmp_path / "calibration.npz", input_ids=np.zeros((1, 1), np.int64))
    with pytest.raises(ValueError, match=r"lacks the llm graph inputs \['prefix_embeds'\]"):
        read_calibration(tmp_path / "calibration.npz", ["prefix_embeds", "input_ids"])
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a readable .npz file"):
        read_calibration(tmp_path / "broken.npz", ["input_ids"])


# The builds, with the test double in place of TensorRT and ModelOpt

@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    shutil.copytree(tiny_bundle, tmp_path / "bundle")
    return load_bundle(tmp_path / "bundle")


def build(bundle, double, precision, graphs=("vision", "qformer_image_region", "llm"), **kwargs):
    profiles = {name: profile for name, profile in derive_profiles(bundle.manifest, Limits(2, 3)).items()
                if name in graphs}
    return build_engines(bundle, profiles, precision, 1 << 20, double.toolchain(), show_progress=False, **kwargs)


def test_the_builder_gets_each_graphs_settings_and_engines_json_records_them(bundle):
    double = DoubleToolchain()
    build(bundle, double, "fp16")
    graphs = read_engines_manifest(bundle.path)["graphs"]
    for name in ("vision", "qformer_image_region", "llm"):
        assert double.settings[name] == graphs[name]["build"] == build_settings(name, "fp16")
    assert graphs["qformer_image_region"]["build"]["fp16"] is False and graphs["llm"]["build"]["tf32"] is False


def test_an_int4_build_quantizes_the_llm_and_checks_it_against_the_quantized_graph(bundle):
    double = DoubleToolchain()
    rows = build(bundle, double, "int4")
    assert [(source, target, method) for source, target, method, _, _ in double.quantized] == [
        ("llm.onnx", "llm.int4.onnx", "rtn_dq")]
    assert double.quantized[0][4] == tuple(spec.name for spec in bundle.manifest.graphs["llm"].inputs)
    graphs = read_engines_manifest(bundle.path)["graphs"]
    assert {name: entry["precision"] for name, entry in graphs.items()} == {
        "vision": "fp16", "qformer_image_region": "fp32", "llm": "int4"}
    assert graphs["llm"]["parity_reference"] == "ModelOpt Q/DQ graph"
    assert [row[1] for row in rows] == ["fp16", "fp32", "int4"]
    assert sorted(path.name for path in (bundle.path / ENGINES_DIR).iterdir() if "onnx" in path.name) == []


def test_calibration_data_reaches_modelopt_and_a_new_file_rebuilds_only_the_llm(bundle, tmp_path):
    calibration = tmp_path / "calibration.npz"
    np.savez(calibration, input_ids=np.zeros((1, 1), np.int64))
    build(bundle, DoubleToolchain(), "int4", calibration=calibration)
    np.savez(calibration, input_ids=np.ones((1, 1), np.int64))
    double = DoubleToolchain()
    build(bundle, double, "int4", calibration=calibration)
    assert double.built == ["llm"] and double.quantized[0][2:4] == ("awq_lite", calibration)


def test_switching_fp16_to_int4_rebuilds_only_the_graphs_whose_settings_change(bundle):
    build(bundle, DoubleToolchain(), "fp16")
    double = DoubleToolchain()
    build(bundle, double, "int4")
    assert double.built == ["llm"]  # the vision encoder is fp16 in both, the Q-Former fp32 in both


def test_an_engine_built_with_other_settings_is_rebuilt(bundle):
    build(bundle, DoubleToolchain(), "fp32")
    path = bundle.path / ENGINES_DIR / "engines.json"
    engines = json.loads(path.read_text())
    engines["graphs"]["vision"]["build"]["tf32"] = True  # as built before TF32 was cleared
    path.write_text(json.dumps(engines))
    double = DoubleToolchain()
    rows = build(bundle, double, "fp32")
    assert double.built == ["vision"] and rows[0][5] == "built (build settings changed)"


# The command line

def _args(checkpoint, out, *more):
    return ["--ckpt", str(checkpoint), "--out", str(out), "--max-new-tokens", "8", *more]


@pytest.mark.parametrize("more, message", [
    (["--quantize", "int4"], "TensorRT engines are built from the fp32 graphs: --quantize int4 writes ONNX Runtime's "
                             "com.microsoft MatMulNBits, which TensorRT's ONNX parser does not import; use "
                             "--engine-precision int8 or int4 (ModelOpt Q/DQ) for quantized engines"),
    (["--precision", "fp16"], "for fp16 engines use --engine-precision fp16"),
    (["--fp16", "--engine-precision", "int4"], "--fp16 and --engine-precision int4 disagree"),
    (["--engine-precision", "int8"], "int8 engines quantize the LLM's activations too (TensorRT's INT8 is W8A8), so "
                                     "they need real activation ranges: pass --calibration-data FILE.npz"),
    (["--calibration-data", "x.npz"], "--calibration-data calibrates int8 / int4 engines, not fp32 ones"),
    (["--engine-precision", "int4", "--calibration-data", "none.npz"], "--calibration-data none.npz does not exist"),
], ids=["matmulnbits", "onnx-precision", "disagree", "int8-uncalibrated", "calibrating-fp32", "missing-file"])
def test_precision_arguments_are_checked_before_exporting(more, message, tiny_checkpoint, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(_args(tiny_checkpoint, tmp_path / "bundle", *more)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("export.trt: ") and message in error[0]
    assert list(tmp_path.iterdir()) == []


def test_without_modelopt_an_int4_build_says_how_to_install_it(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # importable, never called
    monkeypatch.setitem(sys.modules, "modelopt", None)  # as where it is not installed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = tmp_path / "bundle"
    assert main(_args(tiny_checkpoint, out, "--engine-precision", "int4", "--modalities", "image")) == 3
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        'export.trt: int8 and int4 engines need NVIDIA ModelOpt (pip install "nvidia-modelopt[onnx]")')
    assert error[0].endswith(f"the ONNX bundle is written to {out}")


def test_the_cli_builds_an_int4_set_and_prints_each_graphs_precision(bundle, tiny_checkpoint, capsys):
    double = DoubleToolchain()
    assert main(_args(tiny_checkpoint, bundle.path, "--engine-precision", "int4"), toolchain=double.toolchain()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith(("llm ", "vision ", "qformer_image "))] == [
        "fp16", "fp32", "int4"]
    assert lines[-1].startswith("int4 build: engines written to")


def test_calibration_data_without_the_llms_inputs_is_refused_before_any_engine_is_built(bundle, tiny_checkpoint,
                                                                                       tmp_path, capsys):
    np.savez(tmp_path / "calibration.npz", input_ids=np.zeros((1, 1), np.int64))
    double = DoubleToolchain()
    more = ["--engine-precision", "int4", "--calibration-data", str(tmp_path / "calibration.npz")]
    assert main(_args(tiny_checkpoint, bundle.path, *more), toolchain=double.toolchain()) == 2
    assert "lacks the llm graph inputs" in capsys.readouterr().err and double.built == []


# Real TensorRT (a GPU machine with the tensorrt package)

@pytest.mark.tensorrt
def test_real_fp16_engines_keep_their_fp32_layers_and_match_onnx_runtime(bundle, tiny_checkpoint):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (NVIDIA's index, GPU machines only)")
    assert main(_args(tiny_checkpoint, bundle.path, "--fp16", "--max-batch", "2", "--max-regions", "3")) == 0
    graphs = read_engines_manifest(bundle.path)["graphs"]
    assert graphs["llm"]["precision"] == "fp16" and graphs["qformer_image"]["precision"] == "fp32"
    assert all(entry["parity_max_abs_diff"] <= entry["parity_tolerance"] for entry in graphs.values())
