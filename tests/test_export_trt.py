"""python -m export.trt: profiles, cache keys, rebuild and re-export decisions, engines.json, the CLI.

Everything here but the `tensorrt` tests runs without TensorRT: the builder is replaced by a test
double (tests/tensorrt_double.py) that writes placeholder bytes and "runs" a plan with ONNX Runtime on
the same ONNX file. It proves the bookkeeping around TensorRT, never TensorRT itself.
"""
import dataclasses
import shutil
import sys

import numpy as np
import pytest

from contract.generation import MAX_PROMPT_TOKENS, Decoding
from export.trt import ToolchainUnavailable, export_reason, main, open_toolchain
from export.trt_build import ParityError, build_engines, rebuild_reason
from export.trt_profiles import Limits, derive_profiles, random_feeds
from runtime.bundle import load_bundle
from runtime.tensorrt_runner import ENGINES_DIR, engine_key, read_engines_manifest
from tensorrt_double import MACHINE, DoubleToolchain


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    """A private copy of the tiny bundle (every modality, max_new_tokens 8)."""
    shutil.copytree(tiny_bundle, tmp_path / "bundle")
    return load_bundle(tmp_path / "bundle")


SOME_GRAPHS = ("vision", "qformer_image_region", "llm")  # enough for the bookkeeping, and quicker than all


def build(bundle, double, precision="fp32", limits=Limits(max_batch=2, max_regions=3), graphs=SOME_GRAPHS, **kwargs):
    profiles = {name: profile for name, profile in derive_profiles(bundle.manifest, limits).items()
                if graphs is None or name in graphs}
    return build_engines(bundle, profiles, precision, 1 << 20, double.toolchain(), show_progress=False, **kwargs)


# Profiles

def test_every_dynamic_axis_of_every_graph_has_min_opt_max_in_order(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    profiles = derive_profiles(manifest, Limits())
    assert set(profiles) == set(manifest.graphs)
    for name, graph in manifest.graphs.items():
        for spec in graph.inputs:
            shapes = profiles[name].shapes[spec.name]
            for axis, size in enumerate(spec.shape):
                low, opt, high = (shapes[point][axis] for point in ("min", "opt", "max"))
                if isinstance(size, int):
                    assert low == opt == high == size
                else:
                    assert 0 <= low <= opt <= high, (name, spec.name, size)


def test_llm_profile_allows_empty_prefix_in_decode_and_empty_past_in_prefill(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    axes = derive_profiles(manifest, Limits(max_batch=2, max_regions=5)).__getitem__("llm").axes
    queries, new_tokens = manifest.model["num_query_tokens"], manifest.generation.max_new_tokens
    assert axes["prefix"] == (0, 0, queries)  # opt is a decode step: no soft prompt
    assert axes["tokens"] == (1, 1, 1 + MAX_PROMPT_TOKENS)  # one token a decode step; BOS and a prompt in prefill
    assert axes["past"][0] == 0 and axes["past"][2] == queries + 1 + MAX_PROMPT_TOKENS + new_tokens - 1
    assert axes["batch"] == (1, 4, 5)


def test_llm_batch_covers_every_beam_of_every_region(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    axes = derive_profiles(manifest, Limits(max_batch=2, max_regions=5, num_beams=3))["llm"].axes
    assert axes["batch"][2] == 15


def test_encoder_profiles_follow_the_limits_and_the_preprocessing(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    profiles = derive_profiles(manifest, Limits(max_batch=3, max_regions=7))
    assert profiles["vision"].shapes["pixel_values"]["max"] == [3, 3, 32, 32]
    assert profiles["qformer_image_region"].axes["regions"] == (1, 4, 7)
    assert profiles["qformer_image_region"].axes["frames"] == (1, 1, 3)
    assert profiles["point_encoder"].axes["num_points"] == (200, 300, 300)
    assert profiles["qformer_image"].axes["image_tokens"] == (17, 17, 17)


def test_llm_checks_cover_prefill_and_decode_extremes(tiny_bundle):
    checks = derive_profiles(load_bundle(tiny_bundle).manifest, Limits())["llm"].checks
    assert any(c["past"] == 0 and c["prefix"] > 0 for c in checks)
    assert any(c["prefix"] == 0 and c["past"] > 0 for c in checks)


def test_too_long_a_sequence_for_the_model_is_refused(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    with pytest.raises(ValueError, match="lower --max-new-tokens"):
        derive_profiles(manifest, Limits(max_new_tokens=1000))


def test_limits_below_one_are_refused():
    with pytest.raises(ValueError, match="--max-regions is 0"):
        Limits(max_regions=0)


def test_random_feeds_keep_ids_and_indices_in_range(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    sizes = {"batch": 6, "prefix": 0, "tokens": 1, "past": 5}
    feeds = random_feeds(manifest, "llm", sizes, np.random.default_rng(0))
    assert feeds["prefix_embeds"].shape == (6, 0, 32) and feeds["input_ids"].dtype == np.int64
    assert feeds["input_ids"].max() < manifest.model["text"]["vocab_size"]
    assert feeds["adapter_ids"].max() <= len(manifest.llm.adapters)
    region = random_feeds(manifest, "qformer_image_region", {"frames": 2, "regions": 9, "image_tokens": 17},
                          np.random.default_rng(0))
    assert region["frame_index"].max() < 2
    assert (region["boxes"][:, 2:] > region["boxes"][:, :2]).all()


# Cache keys and rebuild decisions

PROFILE = {"x": {"min": [1, 0], "opt": [2, 3], "max": [4, 9]}}


@pytest.mark.parametrize("change", [
    lambda k: k.update(machine={**MACHINE, "tensorrt": "10.1.0"}),
    lambda k: k.update(machine={**MACHINE, "gpu": "Other GPU"}),
    lambda k: k.update(machine={**MACHINE, "compute_capability": "8.7"}),
    lambda k: k.update(precision="fp16"),
    lambda k: k.update(profile={"x": {"min": [1, 0], "opt": [2, 3], "max": [4, 10]}}),
    lambda k: k.update(graph_sha256="b" * 64),
], ids=["tensorrt", "gpu", "compute", "precision", "profile", "onnx"])
def test_cache_key_changes_with_each_thing_the_engine_depends_on(change):
    base = {"machine": MACHINE, "precision": "fp32", "profile": PROFILE, "graph_sha256": "a" * 64}
    changed = dict(base)
    change(changed)
    assert engine_key(**changed) != engine_key(**base)


def test_cache_key_ignores_everything_else():
    machine = {**MACHINE, "hostname": "robot-7"}
    reordered = {"x": {"max": [4, 9], "opt": [2, 3], "min": [1, 0]}}
    assert engine_key(machine, "fp32", reordered, "a" * 64) == engine_key(MACHINE, "fp32", PROFILE, "a" * 64)


def test_rebuild_reason(tmp_path):
    (tmp_path / "g.plan").write_bytes(b"plan")
    from contract.manifest import sha256
    entry = {"key": "k1", "file": "g.plan", "sha256": sha256(tmp_path / "g.plan")}
    assert rebuild_reason(entry, "k1", tmp_path) is None
    assert rebuild_reason(None, "k1", tmp_path) == "no engine yet"
    assert rebuild_reason(entry, "k2", tmp_path) == "key changed"
    (tmp_path / "g.plan").write_bytes(b"truncated")
    assert rebuild_reason(entry, "k1", tmp_path) == "engine file changed"
    (tmp_path / "g.plan").unlink()
    assert rebuild_reason(entry, "k1", tmp_path) == "engine file missing"


# engines.json bookkeeping, with the test double in place of TensorRT

def test_engines_json_records_every_graph_with_its_key_file_and_parity(bundle):
    double = DoubleToolchain()
    rows = build(bundle, double, graphs=None)
    engines = read_engines_manifest(bundle.path)
    assert set(engines["graphs"]) == set(bundle.manifest.graphs) == set(double.built)
    profiles = derive_profiles(bundle.manifest, Limits(max_batch=2, max_regions=3))
    for name, entry in engines["graphs"].items():
        key = engine_key(MACHINE, "fp32", profiles[name].to_json(), bundle.manifest.graph_sha256(name))
        assert entry["key"] == key
        assert entry["file"] == f"{name}-{entry['key'][:16]}.plan"
        assert (bundle.path / ENGINES_DIR / entry["file"]).is_file()
        assert entry["profile"] == profiles[name].to_json() and entry["precision"] == "fp32"
        assert entry["gpu"] == "Test Double GPU" and entry["parity_max_abs_diff"] == 0.0
    assert [row[5] for row in rows] == ["built (no engine yet)"] * len(rows)


def test_a_second_run_keeps_every_engine(bundle):
    build(bundle, DoubleToolchain())
    double = DoubleToolchain()
    rows = build(bundle, double)
    assert double.built == [] and {row[5] for row in rows} == {"kept"}


def test_only_the_graph_whose_engine_file_is_missing_is_rebuilt(bundle):
    build(bundle, DoubleToolchain())
    (bundle.path / ENGINES_DIR / read_engines_manifest(bundle.path)["graphs"]["vision"]["file"]).unlink()
    double = DoubleToolchain()
    build(bundle, double)
    assert double.built == ["vision"]


def test_an_unreadable_engines_json_rebuilds_everything(bundle):
    build(bundle, DoubleToolchain())
    (bundle.path / ENGINES_DIR / "engines.json").write_text("{truncated")
    double = DoubleToolchain()
    build(bundle, double)
    assert sorted(double.built) == sorted(SOME_GRAPHS)
    assert set(read_engines_manifest(bundle.path)["graphs"]) == set(SOME_GRAPHS)


def test_another_gpu_or_precision_rebuilds_all_and_removes_the_old_plans(bundle):
    build(bundle, DoubleToolchain())
    old = {entry["file"] for entry in read_engines_manifest(bundle.path)["graphs"].values()}
    double = DoubleToolchain({**MACHINE, "gpu": "Other GPU"})
    build(bundle, double, precision="fp16")
    assert sorted(double.built) == sorted(SOME_GRAPHS)
    plans = {path.name for path in (bundle.path / ENGINES_DIR).glob("*.plan")}
    assert plans.isdisjoint(old) and len(plans) == len(SOME_GRAPHS)
    precisions = {name: e["precision"] for name, e in read_engines_manifest(bundle.path)["graphs"].items()}
    assert precisions == {"vision": "fp16", "qformer_image_region": "fp32", "llm": "fp16"}


def test_a_larger_profile_rebuilds(bundle):
    build(bundle, DoubleToolchain())
    double = DoubleToolchain()
    build(bundle, double, limits=Limits(max_batch=2, max_regions=4))
    assert sorted(double.built) == ["llm", "qformer_image_region"]


def test_the_timing_cache_is_loaded_before_and_saved_after_every_build(bundle):
    double = DoubleToolchain()
    build(bundle, double)
    assert double.timing_caches[0] is None
    assert double.timing_caches[1] == f"{double.built[0]};".encode()
    cache = (bundle.path / ENGINES_DIR / "timing.cache").read_bytes()
    assert cache == "".join(f"{name};" for name in double.built).encode()


def test_an_engine_off_by_more_than_the_tolerance_is_refused_and_not_recorded(bundle):
    with pytest.raises(ParityError, match="differs from ONNX Runtime by 1.00e-02"):
        build(bundle, DoubleToolchain(offset=1e-2))
    assert read_engines_manifest(bundle.path) is None
    assert list((bundle.path / ENGINES_DIR).glob("*.plan")) == []


def test_fp16_graphs_accept_the_fp16_tolerance(bundle):
    rows = build(bundle, DoubleToolchain(offset=1e-2), precision="fp16", graphs=("vision", "llm"))
    assert all(abs(row[4] - 1e-2) < 1e-6 for row in rows)


def test_the_qformer_of_an_fp16_build_is_held_to_the_fp32_tolerance(bundle):
    with pytest.raises(ParityError, match="graph qformer_image_region: the fp32 engine differs"):
        build(bundle, DoubleToolchain(offset=1e-2), precision="fp16", graphs=("qformer_image_region",))


# The ONNX re-export decision

def test_the_same_checkpoint_reuses_the_bundle(bundle, tiny_checkpoint):
    assert export_reason(bundle.path, tiny_checkpoint, bundle.modalities, _generation(bundle)) is None


def test_a_different_checkpoint_re_exports(bundle, tiny_checkpoint, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other)
    with open(other / "model.safetensors", "ab") as file:
        file.write(b" ")
    reason = export_reason(bundle.path, other, bundle.modalities, _generation(bundle))
    assert reason == "the bundle was exported from a different checkpoint"


def test_other_modalities_or_generation_defaults_re_export(bundle, tiny_checkpoint):
    assert "modalities" in export_reason(bundle.path, tiny_checkpoint, ["image"], _generation(bundle))
    generation = dataclasses.replace(_generation(bundle), num_beams=5)
    assert "generation defaults" in export_reason(bundle.path, tiny_checkpoint, bundle.modalities, generation)


def test_a_missing_or_tampered_bundle_re_exports(bundle, tiny_checkpoint, tmp_path):
    assert export_reason(tmp_path / "none", tiny_checkpoint, bundle.modalities, _generation(bundle)).startswith(
        "no bundle at")
    (bundle.path / "vision.onnx").write_bytes(b"corrupt")
    reason = export_reason(bundle.path, tiny_checkpoint, bundle.modalities, _generation(bundle))
    assert "fails verification" in reason


def _generation(bundle):
    generation = bundle.manifest.generation
    return Decoding(max_new_tokens=generation.max_new_tokens, min_new_tokens=generation.min_new_tokens,
                    num_beams=generation.num_beams)


# The command line

def _args(checkpoint, out, *more):
    return ["--ckpt", str(checkpoint), "--out", str(out), "--max-new-tokens", "8", *more]


def test_without_tensorrt_the_onnx_bundle_is_written_and_one_line_explains(tiny_checkpoint, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as where it is not installed, also on a GPU machine
    out = tmp_path / "bundle"
    assert main(_args(tiny_checkpoint, out, "--modalities", "image")) == 3
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"export.trt: TensorRT is not installed (pip install tensorrt from NVIDIA's index on the GPU "
                     f"machine); the ONNX bundle is written to {out}"]
    assert load_bundle(out).modalities == ["image"]


def test_the_cli_reuses_the_onnx_bundle_and_writes_engines(bundle, tiny_checkpoint, capsys):
    manifest_before = (bundle.path / "manifest.json").read_bytes()
    double = DoubleToolchain()
    assert main(_args(tiny_checkpoint, bundle.path, "--max-regions", "3"), toolchain=double.toolchain()) == 0
    printed = capsys.readouterr().out
    assert "reusing the ONNX bundle" in printed and "max |trt-ort|" in printed
    assert (bundle.path / "manifest.json").read_bytes() == manifest_before
    assert set(read_engines_manifest(bundle.path)["graphs"]) == set(bundle.manifest.graphs)
    load_bundle(bundle.path)  # the engines do not disturb the ONNX bundle's verification


def test_without_a_cuda_gpu_the_toolchain_says_so(monkeypatch):
    import types

    import torch

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # importable, never called
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ToolchainUnavailable, match=r"no CUDA GPU is visible to torch"):
        open_toolchain("cuda")


@pytest.mark.parametrize("case", ["missing checkpoint", "corrupt checkpoint", "unknown modality",
                                  "unwritable output", "zero batch", "cpu device"])
def test_bad_inputs_fail_with_one_line_and_write_nothing(case, tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    checkpoint, out, more = tiny_checkpoint, tmp_path / "bundle", []
    if case == "missing checkpoint":
        checkpoint = tmp_path / "nowhere"
    elif case == "corrupt checkpoint":
        checkpoint = tmp_path.parent / f"{tmp_path.name}-corrupt"  # outside tmp_path, which must stay empty
        shutil.copytree(tiny_checkpoint, checkpoint)
        (checkpoint / "model.safetensors").write_bytes(b"not safetensors")
    elif case == "unknown modality":
        more = ["--modalities", "sonar"]
    elif case == "unwritable output":
        out = tmp_path / "file" / "bundle"
    elif case == "zero batch":
        more = ["--max-batch", "0"]
    else:
        more = ["--device", "cpu"]
    assert main(_args(checkpoint, out, *more)) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("export.trt: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# Real TensorRT (a GPU machine with the tensorrt package)

@pytest.mark.tensorrt
def test_real_engines_for_the_tiny_bundle_match_onnx_runtime(bundle, tiny_checkpoint, capsys):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (NVIDIA's index, GPU machines only)")
    assert main(_args(tiny_checkpoint, bundle.path, "--max-batch", "2", "--max-regions", "3")) == 0
    engines = read_engines_manifest(bundle.path)
    for entry in engines["graphs"].values():
        assert entry["parity_max_abs_diff"] <= 1e-3
    assert main(_args(tiny_checkpoint, bundle.path, "--max-batch", "2", "--max-regions", "3")) == 0
    assert capsys.readouterr().out.count(" kept") == len(bundle.manifest.graphs)
