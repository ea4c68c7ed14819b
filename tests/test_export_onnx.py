"""python -m export.onnx writes a bundle whose graphs compute what the PyTorch model computes."""
import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from contract.generation import GenerationSettings
from contract.manifest import Manifest
from export.onnx import main
from runtime.bundle import BundleError, load_bundle
from runtime.graph_engine import GraphEngine, LanguageModelGraph
from runtime.decoding import decode
from runtime.onnx_runner import OnnxRunner
from training.modeling_regionblip import RegionBLIP

GRAPHS = {"vision", "point_encoder", "llm", "qformer_image", "qformer_image_region", "qformer_pointcloud",
          "qformer_pointcloud_region"}


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return RegionBLIP.from_pretrained(tiny_checkpoint).eval()


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    return GraphEngine(bundle, OnnxRunner(bundle))


def session(bundle_path, name):
    return onnxruntime.InferenceSession(str(bundle_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])


def test_every_graph_passes_the_onnx_checker_and_is_in_the_manifest(tiny_bundle):
    manifest = Manifest.from_json((tiny_bundle / "manifest.json").read_text())
    assert set(manifest.graphs) == GRAPHS
    for name, graph in manifest.graphs.items():
        onnx.checker.check_model(str(tiny_bundle / graph.file))
        assert graph.file in manifest.files
        assert [i.name for i in onnx.load(str(tiny_bundle / graph.file)).graph.input] == [
            spec.name for spec in graph.inputs]
    assert {"tokenizer/tokenizer.json"} <= set(manifest.files)
    assert manifest.exporter["opset"] == 18 and manifest.generation.eos_token_id == 202


@torch.no_grad()
def test_the_tied_token_embedding_is_stored_once_in_the_llm_graph(tiny_bundle, model):
    vocab = model.config.text_config().vocab_size
    sized = [i.dims for i in onnx.load(str(tiny_bundle / "llm.onnx")).graph.initializer if vocab in i.dims]
    assert len(sized) == 1


@torch.no_grad()
def test_features_match_pytorch_at_a_new_batch_size(tiny_bundle, model):
    pixels = torch.randn(3, 3, model.config.image_size, model.config.image_size)
    points = torch.randn(4, 333, 3)
    np.testing.assert_allclose(session(tiny_bundle, "vision").run(None, {"pixel_values": pixels.numpy()})[0],
                               model.encode_frames("image", pixel_values=pixels).numpy(), atol=1e-4)
    np.testing.assert_allclose(session(tiny_bundle, "point_encoder").run(None, {"points": points.numpy()})[0],
                               model.encode_frames("pointcloud", points=points).numpy(), atol=1e-4)


@pytest.mark.parametrize("modality, box_dims", [("image_region", 4), ("pointcloud_region", 24)])
@torch.no_grad()
def test_region_soft_prompts_match_pytorch_for_several_frames(tiny_bundle, model, modality, box_dims):
    tokens = 17 if modality == "image_region" else model.config.point_num_group + 1
    features = torch.randn(3, tokens, model.config.qformer_config().encoder_hidden_size)
    boxes = torch.rand(6, box_dims) * 0.5
    if box_dims == 4:
        boxes[:, 2:] += 0.5
    frame_index = torch.tensor([0, 2, 2, 1, 0, 2])
    feeds = {"features": features.numpy(), "boxes": boxes.numpy(), "frame_index": frame_index.numpy()}
    points = None
    if modality == "pointcloud_region":  # the tiny checkpoint crops each region's cloud (point_region_crop)
        points = torch.randn(3, model.config.scene_num_points, 3)
        feeds["points"] = points.numpy()
    model.use_modality(modality)
    _, expected = model.soft_prompt(modality, features, boxes, frame_index, points)
    got = session(tiny_bundle, f"qformer_{modality}").run(None, feeds)[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


@torch.no_grad()
def test_llm_logits_match_pytorch_with_a_kv_cache(tiny_bundle, model):
    model.use_modality("image_region")
    llm = model.language_model
    prompt = torch.randn(2, 5, llm.config.word_embed_proj_dim)
    ids = torch.tensor([[2, 40, 41], [2, 50, 51]])
    engine_bundle = load_bundle(tiny_bundle)
    step = LanguageModelGraph(OnnxRunner(engine_bundle), engine_bundle, np.array([0, 0]))  # image_region
    logits, past = step(prompt.numpy(), ids[:, :1].numpy(), None)
    for t in range(1, 3):
        logits, past = step(prompt[:, :0].numpy(), ids[:, t:t + 1].numpy(), past)
    expected = llm(inputs_embeds=torch.cat([prompt, llm.get_input_embeddings()(ids)], 1)).logits[:, -1]
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)


@pytest.mark.parametrize("modality", ["image_region", "pointcloud_region"])
def test_greedy_tokens_equal_pytorch_generate_for_several_frames_and_regions(engine, model, modality):
    settings = GenerationSettings(bos_token_id=2, eos_token_id=202, pad_token_id=1, max_new_tokens=6)
    generator = torch.Generator().manual_seed(5)
    if modality == "image_region":
        size = model.config.image_size
        frames = torch.randn(2, 3, size, size, generator=generator)
        boxes = torch.tensor([[0.1, 0.1, 0.6, 0.5], [0.3, 0.2, 0.9, 0.9], [0.0, 0.5, 0.4, 1.0]])
        inputs = {"pixel_values": frames}
    else:
        frames = torch.randn(2, 150, 3, generator=generator)
        boxes = torch.randn(3, 8, 3, generator=generator)
        inputs = {"points": frames}
    frame_index = torch.tensor([1, 0, 1])
    expected = model.generate(modality, **inputs, boxes=boxes, frame_index=frame_index, num_beams=1,
                              max_new_tokens=6, min_new_tokens=0, eos_token_id=202)
    decoded, _ = engine.generate(modality, frames.numpy(), settings, boxes.numpy(), frame_index.numpy())
    for row, tokens in zip(decoded, expected.token_ids.tolist()):
        assert list(row.token_ids) == [t for t in tokens if t not in (202, 1)][:len(row.token_ids)]
        assert len(row.token_ids) == len([t for t in tokens if t not in (202, 1)])


def test_a_mixed_modality_batch_equals_each_modality_alone(engine):
    settings = GenerationSettings(bos_token_id=2, eos_token_id=202, pad_token_id=1, max_new_tokens=6)
    features = np.random.default_rng(0).normal(size=(1, 17, 32)).astype(np.float32)
    scene = np.random.default_rng(1).normal(size=(1, 200, 3)).astype(np.float32)
    camera = engine.soft_prompt("image_region", features, np.array([[0.1, 0.1, 0.7, 0.8]], np.float32),
                                np.zeros(1, np.int64))
    lidar = engine.soft_prompt("pointcloud_region", engine.features("pointcloud_region", scene),
                               np.random.default_rng(2).normal(size=(1, 8, 3)).astype(np.float32), np.zeros(1, np.int64),
                               frames=scene)
    alone = [decode(LanguageModelGraph(engine.runner, engine.bundle, engine.adapter_ids([m])), p, settings)[0]
             for m, p in (("image_region", camera), ("pointcloud_region", lidar))]
    mixed = decode(LanguageModelGraph(engine.runner, engine.bundle,
                                      engine.adapter_ids(["image_region", "pointcloud_region"])),
                   np.concatenate([camera, lidar]), settings)
    assert [m.token_ids for m in mixed] == [a.token_ids for a in alone]
    np.testing.assert_allclose([m.score for m in mixed], [a.score for a in alone], atol=1e-5)


def test_a_tampered_graph_fails_the_manifest_check(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    with open(copy / "qformer_image_region.onnx", "ab") as graph:
        graph.write(b"\0")
    with pytest.raises(BundleError, match="qformer_image_region.onnx does not match its sha256"):
        load_bundle(copy)


def test_a_single_modality_bundle_merges_the_adapter_into_the_llm(tiny_checkpoint, tmp_path):
    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--modalities", "image_region"]) == 0
    manifest = load_bundle(tmp_path / "b").manifest
    assert set(manifest.graphs) == {"vision", "qformer_image_region", "llm"}
    assert manifest.llm.stacked is False
    assert "adapter_ids" not in [spec.name for spec in manifest.graphs["llm"].inputs]


@pytest.mark.parametrize("problem, args, message", [
    ("missing checkpoint", ["--ckpt", "{tmp}/nowhere"], "does not exist"),
    ("corrupt checkpoint", ["--ckpt", "{corrupt}"], "model.safetensors that cannot be read"),
    ("truncated checkpoint", ["--ckpt", "{truncated}"], "model.safetensors that cannot be read"),
    ("checkpoint of another config", ["--ckpt", "{mismatched}"], "does not match its config.json"),
    ("unknown modality", ["--modalities", "image_region,sonar"], "unknown modalities ['sonar']"),
])
def test_bad_input_gives_one_line_a_nonzero_exit_and_no_bundle(tiny_checkpoint, tmp_path, capsys, problem, args,
                                                               message):
    corrupt = shutil.copytree(tiny_checkpoint, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    truncated = shutil.copytree(tiny_checkpoint, tmp_path / "truncated")
    os.truncate(truncated / "model.safetensors", (truncated / "model.safetensors").stat().st_size - 100)
    mismatched = shutil.copytree(tiny_checkpoint, tmp_path / "mismatched")
    config = json.loads((mismatched / "config.json").read_text())
    config["text"]["num_hidden_layers"] += 1
    (mismatched / "config.json").write_text(json.dumps(config))
    argv = ["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "out")]
    argv += [a.format(tmp=tmp_path, corrupt=corrupt, truncated=truncated, mismatched=mismatched) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("export.onnx: ") and message in err[0]
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_an_unwritable_output_is_one_clear_line(tiny_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(blocker / "bundle")]) == 2
    assert "cannot write the bundle" in capsys.readouterr().err


def test_image_size_exports_a_vision_graph_equal_to_transformers_interpolate_pos_encoding(tiny_checkpoint, tmp_path):
    from runtime import Describer

    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--image-size", "48",
                 "--modalities", "image_region"]) == 0
    bundle = load_bundle(tmp_path / "b")
    assert bundle.manifest.preprocess.image_size == 48
    pixels = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    model = RegionBLIP.from_pretrained(tiny_checkpoint)  # trained at 32 px
    with torch.no_grad():
        expected = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
    session = onnxruntime.InferenceSession(str(bundle.graph_path("vision")), providers=["CPUExecutionProvider"])
    (features,) = session.run(None, {"pixel_values": pixels.numpy()})
    assert features.shape == (2, 1 + 6 * 6, 32)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5)
    regions = Describer.from_bundle(tmp_path / "b").describe_image_regions(
        np.zeros((60, 80, 3), np.uint8), [[0, 0, 40, 30]])
    assert regions[0].problem is None


def test_an_image_size_off_the_patch_grid_is_refused_before_exporting(tiny_checkpoint, tmp_path, capsys):
    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--image-size", "50"]) == 2
    assert "image size 50 is not a multiple of the vision model's patch size 8: choose one that is, such as 48 or " \
           "56" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def two_large_graphs_config():
    """The tiny config with a ViT and an OPT of about 2.2 GB each: both graphs past protobuf's 2 GB limit."""
    from tests.tiny_checkpoint import tiny_config

    config = tiny_config()
    config.vision.update(hidden_size=1408, intermediate_size=6144, num_hidden_layers=22, num_attention_heads=16)
    config.qformer.update(encoder_hidden_size=1408)
    config.text.update(hidden_size=2048, word_embed_proj_dim=2048, ffn_dim=8192, num_hidden_layers=11,
                       num_attention_heads=16)
    return config


@pytest.mark.slow
def test_a_bundle_with_two_graphs_over_2_gb_loads_and_both_agree_with_pytorch(tmp_path):
    from tests.tiny_checkpoint import _tokenizer

    torch.manual_seed(0)
    model = RegionBLIP(two_large_graphs_config()).eval()
    model.save_pretrained(tmp_path / "checkpoint", tokenizer=_tokenizer())
    assert main(["--ckpt", str(tmp_path / "checkpoint"), "--out", str(tmp_path / "bundle"),
                 "--modalities", "image_region"]) == 0  # its own parity check ran on every graph
    data = {path.name: path.stat().st_size for path in (tmp_path / "bundle").glob("*.onnx.data")}
    assert data["vision.onnx.data"] > 2**31 and data["llm.onnx.data"] > 2**31
    assert sorted(path.name for path in (tmp_path / "bundle").iterdir() if path.suffix in (".onnx", ".data")) == [
        "llm.onnx", "llm.onnx.data", "qformer_image_region.onnx", "qformer_image_region.onnx.data", "vision.onnx",
        "vision.onnx.data"]
    bundle = load_bundle(tmp_path / "bundle", verify="full")
    engine = GraphEngine(bundle, OnnxRunner(bundle))
    size = model.config.image_size
    frames = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    boxes, frame_index = torch.tensor([[0.1, 0.1, 0.6, 0.5], [0.3, 0.2, 0.9, 0.9]]), torch.tensor([0, 0])
    eos = model.config.newline_token_id
    expected = model.generate("image_region", pixel_values=frames, boxes=boxes, frame_index=frame_index, num_beams=1,
                              max_new_tokens=4, min_new_tokens=4, eos_token_id=eos)
    settings = GenerationSettings(bos_token_id=model.config.text_config().bos_token_id, eos_token_id=eos,
                                  pad_token_id=model.config.text_config().pad_token_id, max_new_tokens=4,
                                  min_new_tokens=4)
    decoded, _ = engine.generate("image_region", frames.numpy(), settings, boxes.numpy(), frame_index.numpy())
    assert [list(row.token_ids) for row in decoded] == expected.token_ids.tolist()


# The llm graph ranks the next tokens itself, so that decoding never copies the (B, V) logits

def llm_feeds(bundle, log_prob_bias):
    """Prefill feeds for the llm graph: three rows of a random soft prompt and token, random adapters."""
    from export.trt_profiles import random_feeds

    feeds = random_feeds(bundle.manifest, "llm", {"batch": 3, "prefix": 4, "tokens": 1, "past": 0},
                         np.random.default_rng(0))
    return feeds | {"log_prob_bias": log_prob_bias}


def without_ranked_outputs(bundle):
    """`bundle` as one exported before the llm graph ranked tokens: its manifest lists no top_* outputs."""
    import dataclasses

    llm = bundle.manifest.graphs["llm"]
    outputs = [spec for spec in llm.outputs if not spec.name.startswith("top_")]
    graphs = {**bundle.manifest.graphs, "llm": dataclasses.replace(llm, outputs=outputs)}
    return dataclasses.replace(bundle, manifest=dataclasses.replace(bundle.manifest, graphs=graphs))


class RecordingRunner:
    """A runner that records which outputs every call asks for."""

    def __init__(self, runner):
        self.runner, self.asked = runner, []

    def run(self, name, feeds, outputs=None):
        self.asked.append(outputs)
        return self.runner.run(name, feeds, outputs)


def region_prompts(engine):
    features = np.random.default_rng(0).normal(size=(2, 17, 32)).astype(np.float32)
    boxes = np.array([[0.1, 0.1, 0.7, 0.8], [0.2, 0.0, 0.9, 0.5], [0.0, 0.3, 0.6, 1.0]], np.float32)
    return engine.soft_prompt("image_region", features, boxes, np.array([0, 1, 1]))


def test_the_llm_graph_s_top_tokens_are_torch_log_softmax_and_topk_of_its_logits(engine):
    vocab = engine.bundle.manifest.model["text"]["vocab_size"]
    bias = np.zeros(vocab, np.float32)
    bias[[202, 5, 17]] = -np.inf
    logits, top_log_probs, top_ids = engine.runner.run("llm", llm_feeds(engine.bundle, bias),
                                                       ["logits", "top_log_probs", "top_ids"])
    log_probs = torch.from_numpy(logits).log_softmax(-1)
    expected_ids = (log_probs + torch.from_numpy(bias)).topk(16, dim=-1).indices
    assert top_ids.dtype == np.int64 and top_ids.shape == (3, 16)
    np.testing.assert_array_equal(top_ids, expected_ids.numpy())
    np.testing.assert_allclose(top_log_probs, log_probs.gather(-1, expected_ids).numpy(), atol=1e-5)
    assert not np.isin(top_ids, [202, 5, 17]).any()


@pytest.mark.parametrize("num_beams", [1, 5])
def test_decoding_with_the_graph_s_ranking_equals_ranking_its_logits(engine, num_beams):
    settings = GenerationSettings(bos_token_id=2, eos_token_id=202, pad_token_id=1, max_new_tokens=6,
                                  min_new_tokens=2, num_beams=num_beams)
    prompts, adapter_ids = region_prompts(engine), engine.adapter_ids(["image_region"] * 3)
    ranked = decode(LanguageModelGraph(engine.runner, engine.bundle, adapter_ids), prompts, settings)
    from_logits = decode(LanguageModelGraph(engine.runner, without_ranked_outputs(engine.bundle), adapter_ids),
                         prompts, settings)
    assert [d.token_ids for d in ranked] == [d.token_ids for d in from_logits]
    np.testing.assert_allclose([d.score for d in ranked], [d.score for d in from_logits], atol=1e-5)


def test_the_llm_step_asks_for_the_ranked_tokens_and_the_cache_not_the_logits(engine):
    runner = RecordingRunner(engine.runner)
    settings = GenerationSettings(bos_token_id=2, eos_token_id=202, pad_token_id=1, max_new_tokens=4,
                                  min_new_tokens=4, num_beams=8)
    decode(LanguageModelGraph(runner, engine.bundle, engine.adapter_ids(["image_region"] * 3)),
           region_prompts(engine), settings)
    present = [name.replace("past_", "present_") for name in engine.bundle.manifest.llm.past_names]
    assert runner.asked == [["top_log_probs", "top_ids", *present]] * 4


def test_more_beams_than_the_graph_ranks_tokens_for_rank_the_logits(engine):
    runner = RecordingRunner(engine.runner)
    settings = GenerationSettings(bos_token_id=2, eos_token_id=202, pad_token_id=1, max_new_tokens=3,
                                  num_beams=9)  # 2 x 9 candidates per beam, the graph ranks 16
    decoded = decode(LanguageModelGraph(runner, engine.bundle, engine.adapter_ids(["image_region"] * 3)),
                     region_prompts(engine), settings)
    assert len(decoded) == 3 and all(asked[0] == "logits" for asked in runner.asked)
