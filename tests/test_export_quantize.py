"""export.onnx --precision fp16 / --quantize int8|int4|...: the vision and LLM graphs (int8-dynamic: the Q-Formers
too) rewritten with ONNX Runtime's tools, recorded in the manifest, and loaded by the runtime without a flag."""
import numpy as np
import onnx
import pytest

from contract.boxes import box_corners, yaw_to_matrix
from export.onnx import main as export_main
from export.trt import main as trt_main
from runtime import Describer
from runtime.bundle import load_bundle

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
BOXES = [[0, 0, 30, 30], [10, 5, 60, 45]]
SCENE = RNG.normal(size=(400, 3)).astype(np.float32)
CORNERS = box_corners(np.array([[0, 0, 0]]), np.array([[1, 1, 1]]), yaw_to_matrix(np.array([0.3])))


@pytest.fixture(scope="module", params=["fp16", "int8", "int4", "int4-a8", "int8-dynamic"])
def variant(request, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants") / request.param
    flag = ["--precision", "fp16"] if request.param == "fp16" else ["--quantize", request.param]
    assert export_main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--max-new-tokens", "8", *flag]) == 0
    return request.param, out


def test_the_manifest_records_the_precision_and_the_runtime_loads_it_without_a_flag(variant, tiny_bundle):
    precision, bundle = variant
    assert load_bundle(bundle).manifest.precision == precision
    reference = Describer.from_bundle(tiny_bundle)
    describer = Describer.from_bundle(bundle)
    for d in (reference, describer):
        d.configure(num_beams=1, max_new_tokens=6, min_new_tokens=0)
    regions = describer.describe_image_regions(IMAGE, BOXES)
    points = describer.describe_point_regions(SCENE, CORNERS)
    assert all(d.problem is None and np.isfinite(d.score) for d in regions + points)
    assert len(regions) == 2 and len(points) == 1


def test_only_the_vision_and_llm_graphs_change_and_int8_dynamic_the_qformers_too(variant, tiny_bundle):
    precision, bundle = variant
    manifest, reference = load_bundle(bundle).manifest, load_bundle(tiny_bundle).manifest
    changed = {name for name, graph in manifest.graphs.items()
               if manifest.graph_sha256(name) != reference.graph_sha256(name)}
    qformers = {name for name in manifest.graphs if name.startswith("qformer_")}
    assert changed == {"vision", "llm"} | (qformers if precision == "int8-dynamic" else set())


def test_quantized_graphs_have_no_fp32_matmul_weight_left_and_fp16_graphs_no_fp32_weight(variant):
    precision, bundle = variant
    for graph in ("vision", "llm"):
        model = onnx.load(str(bundle / f"{graph}.onnx"), load_external_data=False)
        weights = {t.name: t.data_type for t in model.graph.initializer}
        matmul_weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
        if precision == "fp16":
            assert matmul_weights and all(weights[w] == onnx.TensorProto.FLOAT16 for w in matmul_weights)
        elif precision == "int8-dynamic":
            assert matmul_weights == []
            integer = [n for n in model.graph.node if n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger")]
            assert integer and all(weights[n.input[1]] == onnx.TensorProto.INT8 for n in integer)
        else:
            assert matmul_weights == []
            nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
            levels = {a.i for n in nbits for a in n.attribute if a.name == "accuracy_level"} or {0}
            assert nbits and levels == ({4} if precision.endswith("-a8") else {0})  # 4: int8 activations


def test_quantize_and_fp16_together_are_refused(tiny_checkpoint, tmp_path, capsys):
    argv = ["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--precision", "fp16", "--quantize", "int8"]
    assert export_main(argv) == 2
    assert "--quantize int8 rewrites fp32 weights: drop --precision fp16" in capsys.readouterr().err


def test_tensorrt_refuses_reduced_precision_onnx(tiny_checkpoint, tmp_path, capsys):
    assert trt_main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--quantize", "int4"]) == 2
    assert "TensorRT engines are built from the fp32 graphs" in capsys.readouterr().err


def test_an_int8_dynamic_export_that_cannot_fit_in_memory_is_refused_before_it_starts(tiny_checkpoint, tmp_path,
                                                                                       capsys, monkeypatch):
    # quantize_dynamic was killed by the kernel at the release size (export/quantize.py): a killed process says nothing.
    monkeypatch.setattr("export.quantize._available_memory", lambda: 1000)
    out = tmp_path / "b"
    assert export_main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--quantize", "int8-dynamic"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--quantize int8-dynamic holds a graph's fp32 weights" in error
    assert "use --quantize int8-a8 or int4-a8" in error and not out.exists()
    assert export_main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--quantize", "int8-a8"]) == 0  # unchecked


def test_the_memory_check_needs_more_than_the_measured_failure():
    from export.quantize import DYNAMIC_MEMORY_FACTOR, check_memory

    graph = 10 * 2**30
    check_memory("int8-dynamic", graph, available=int(DYNAMIC_MEMORY_FACTOR * graph) + 1)
    check_memory("int4-a8", graph, available=1)  # only int8-dynamic holds two copies
    with pytest.raises(ValueError, match="more than 24.0 GiB for the largest graph here"):
        check_memory("int8-dynamic", graph, available=int(DYNAMIC_MEMORY_FACTOR * graph) - 1)
