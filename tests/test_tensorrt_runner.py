"""runtime/tensorrt_runner.py: choosing a bundle's engines for this machine, and running them.

Engine selection is specified on engines.json files written here with placeholder plan files (no
TensorRT involved); running engines needs TensorRT and a CUDA GPU (the `tensorrt` tests).
"""
import dataclasses
import json
import shutil
import sys

import numpy as np
import pytest

from export.trt_build import write_engines_manifest
from export.trt_profiles import Limits, derive_profiles, random_feeds
from runtime.bundle import BundleError, load_bundle
from runtime.tensorrt_runner import (ENGINES_DIR, TensorRTRunner, engine_key, read_engines_manifest,
                                     select_engines)

MACHINE = {"tensorrt": "10.0.0-test-double", "gpu": "Test Double GPU", "compute_capability": "0.0"}


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    """A private copy of the tiny bundle with placeholder engines recorded for MACHINE."""
    shutil.copytree(tiny_bundle, tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    (bundle.path / ENGINES_DIR).mkdir()
    entries = {}
    for name, profile in derive_profiles(bundle.manifest, Limits()).items():
        key = engine_key(MACHINE, "fp32", profile.to_json(), bundle.manifest.graph_sha256(name))
        entries[name] = {"file": f"{name}-{key[:16]}.plan", "key": key, "precision": "fp32",
                         "profile": profile.to_json(), **MACHINE}
        (bundle.path / ENGINES_DIR / entries[name]["file"]).write_bytes(b"placeholder, not a TensorRT plan")
    write_engines_manifest(bundle.path, entries)
    return bundle


def test_engines_built_for_this_machine_are_chosen_for_every_graph(bundle):
    plans = select_engines(bundle, read_engines_manifest(bundle.path), MACHINE)
    assert list(plans) == list(bundle.manifest.graphs)
    assert all(path.parent == bundle.path / ENGINES_DIR and path.is_file() for path in plans.values())


def test_engines_of_another_gpu_are_refused_with_the_command_to_rebuild(bundle):
    other = {**MACHINE, "gpu": "Jetson Orin", "compute_capability": "8.7"}
    with pytest.raises(BundleError) as error:
        select_engines(bundle, read_engines_manifest(bundle.path), other)
    message = str(error.value)
    assert "Test Double GPU" in message and "Jetson Orin" in message
    assert f"python -m export.trt --ckpt {bundle.path / bundle.manifest.source.checkpoint} --out {bundle.path}" in message


def test_engines_of_another_tensorrt_version_are_refused(bundle):
    with pytest.raises(BundleError, match="TensorRT 10.0.0-test-double"):
        select_engines(bundle, read_engines_manifest(bundle.path), {**MACHINE, "tensorrt": "10.3.0"})


@pytest.mark.parametrize("changed", ["llm.onnx", "llm.onnx.data"], ids=["graph", "weights only"])
def test_engines_of_a_re_exported_graph_are_refused_even_when_only_its_weights_changed(bundle, changed):
    manifest = dataclasses.replace(bundle.manifest, files={**bundle.manifest.files, changed: "0" * 64})
    with pytest.raises(BundleError, match="the llm engine .* or for another ONNX graph or weights"):
        select_engines(type(bundle)(bundle.path, manifest), read_engines_manifest(bundle.path), MACHINE)


def test_a_bundle_without_engines_names_the_command_to_build_them(bundle):
    shutil.rmtree(bundle.path / ENGINES_DIR)
    assert read_engines_manifest(bundle.path) is None
    with pytest.raises(BundleError, match="has no TensorRT engines: build them with python -m export.trt --ckpt"):
        select_engines(bundle, None, MACHINE)


def test_a_graph_without_an_engine_is_named(bundle):
    engines = read_engines_manifest(bundle.path)
    del engines["graphs"]["point_encoder"]
    with pytest.raises(BundleError, match="no TensorRT engine for graph 'point_encoder'"):
        select_engines(bundle, engines, MACHINE)


def test_a_missing_engine_file_is_named(bundle):
    engines = read_engines_manifest(bundle.path)
    (bundle.path / ENGINES_DIR / engines["graphs"]["vision"]["file"]).unlink()
    with pytest.raises(BundleError, match="engine file .*vision-.*plan is missing"):
        select_engines(bundle, engines, MACHINE)


def test_an_unreadable_engines_json_says_to_rebuild(bundle):
    (bundle.path / ENGINES_DIR / "engines.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON .* python -m export.trt"):
        read_engines_manifest(bundle.path)
    (bundle.path / ENGINES_DIR / "engines.json").write_text(json.dumps({"format": 99, "graphs": {}}))
    with pytest.raises(BundleError, match="format 99"):
        read_engines_manifest(bundle.path)


def test_the_runner_refuses_a_cpu_device(bundle):
    with pytest.raises(ValueError, match="TensorRT runs on a CUDA GPU, use device 'cuda'"):
        TensorRTRunner(bundle, device="cpu")


def test_the_runner_says_how_to_install_tensorrt_where_it_is_missing(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ValueError, match="pip install tensorrt from NVIDIA's index"):
        TensorRTRunner(bundle, device="cuda")


def test_the_describer_passes_the_tensorrt_backend_to_the_runner(bundle):
    from runtime.describer import Describer

    with pytest.raises(ValueError, match="use device 'cuda'"):
        Describer.from_bundle(bundle.path, backend="tensorrt", device="cpu")


# Real TensorRT on a CUDA GPU

@pytest.fixture
def built(tiny_bundle, tiny_checkpoint, tmp_path):
    """The tiny bundle with real TensorRT engines (python -m export.trt)."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (NVIDIA's index, GPU machines only)")
    from export.trt import main

    shutil.copytree(tiny_bundle, tmp_path / "bundle")
    out = tmp_path / "bundle"
    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--max-new-tokens", "8",
                 "--max-batch", "2", "--max-regions", "3"]) == 0
    return load_bundle(out)


@pytest.mark.tensorrt
def test_every_graph_matches_onnx_runtime_including_empty_prefix_and_past(built):
    from runtime.onnx_runner import OnnxRunner

    tensorrt, reference = TensorRTRunner(built, device="cuda"), OnnxRunner(built)
    profiles = derive_profiles(built.manifest, Limits(max_batch=2, max_regions=3))
    rng = np.random.default_rng(1)
    for name, profile in profiles.items():
        for sizes in profile.checks:
            feeds = random_feeds(built.manifest, name, sizes, rng)
            outputs = tensorrt.run(name, feeds)
            expected = reference.run(name, feeds)
            assert [o.shape for o in outputs] == [e.shape for e in expected]
            for ours, theirs in zip(outputs, expected):
                np.testing.assert_allclose(ours, theirs, atol=1e-3, err_msg=f"{name} at {sizes}")


@pytest.mark.tensorrt
def test_a_shape_outside_the_profile_names_the_limits_to_raise(built):
    feeds = random_feeds(built.manifest, "vision", {"batch": 3}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="outside the engine's profile .* --max-batch"):
        TensorRTRunner(built, device="cuda").run("vision", feeds)


@pytest.mark.tensorrt
def test_the_describer_says_the_same_with_tensorrt_as_with_onnx_runtime(built):
    from runtime.describer import Describer

    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    boxes = [[4, 4, 30, 40], [10, 2, 60, 46]]
    texts = [[d.text for d in Describer.from_bundle(built.path, backend=backend, device=device)
              .describe_image_regions(image, boxes)]
             for backend, device in (("tensorrt", "cuda"), ("onnxruntime", "cpu"))]
    assert texts[0] == texts[1]


@pytest.mark.tensorrt
def test_decoding_keeps_the_kv_cache_on_the_gpu_and_chooses_onnx_runtime_s_tokens(built):
    import dataclasses

    from runtime.graph_engine import GraphEngine
    from runtime.onnx_runner import OnnxRunner
    from runtime.tensorrt_runner import TorchCudaMemory

    rng = np.random.default_rng(0)
    size = built.manifest.preprocess.image_size
    frames = rng.normal(size=(1, 3, size, size)).astype(np.float32)
    boxes, frame_index = np.array([[0.1, 0.1, 0.6, 0.7], [0.3, 0.2, 0.9, 0.8]], np.float32), np.zeros(2, np.int64)
    settings = dataclasses.replace(built.manifest.generation, max_new_tokens=8, min_new_tokens=8)
    gpu = GraphEngine(built, TensorRTRunner(built, device="cuda"))
    cpu = GraphEngine(built, OnnxRunner(built), device_kv=False)
    assert isinstance(gpu.memory, TorchCudaMemory)
    ours, _ = gpu.generate("image_region", frames, settings, boxes, frame_index)
    theirs, _ = cpu.generate("image_region", frames, settings, boxes, frame_index)
    assert [d.token_ids for d in ours] == [d.token_ids for d in theirs]
    assert gpu.transfers.bytes_per_step == 2 * 8 + 2 * 16 * (4 + 8)  # ids in; the graph's top 16 out
