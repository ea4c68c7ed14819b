"""Prompts and bundles: a bundle exported before prompts still describes without them and refuses them, saying what
is missing; the command line's --prompt; the TensorRT profile's room for a prompt."""
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from contract.generation import MAX_PROMPT_TOKENS
from contract.manifest import MANIFEST_NAME, VERIFIED_NAME, file_hashes
from export.trt_profiles import Limits, derive_profiles
from runtime import Describer
from runtime.bundle import load_bundle
from runtime.cli import main as describe_main
from tests.describer_inputs import BOXES, IMAGE

QUESTION = "Question: what colour is it? Answer:"


def exported_before_prompts(bundle: Path, out: Path) -> Path:
    """A copy of `bundle` whose llm graph is as exported before prompts: no padding input (the graph computes the
    empty padding it used to have no notion of), and a manifest that lists none."""
    import onnx
    from onnx import TensorProto, helper

    shutil.copytree(bundle, out)
    path = out / "llm.onnx"
    model = onnx.load(str(path), load_external_data=False)  # the weights stay in llm.onnx.data, untouched
    graph = model.graph
    kept = [spec for spec in graph.input if spec.name != "padding"]
    del graph.input[:]
    graph.input.extend(kept)
    graph.initializer.append(helper.make_tensor("padding_width", TensorProto.INT64, [1], [2]))
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    for node in reversed([helper.make_node("Shape", ["input_ids"], ["padding_rows"], end=1),
                          helper.make_node("Concat", ["padding_rows", "padding_width"], ["padding_shape"], axis=0),
                          helper.make_node("ConstantOfShape", ["padding_shape"], ["padding"], value=zero)]):
        graph.node.insert(0, node)
    onnx.save(model, str(path))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    llm = manifest["graphs"]["llm"]
    llm["inputs"] = [spec for spec in llm["inputs"] if spec["name"] != "padding"]
    (out / VERIFIED_NAME).unlink(missing_ok=True)
    (out / MANIFEST_NAME).write_text(json.dumps({**manifest, "files": file_hashes(out)}))
    return out


@pytest.fixture(scope="module")
def old_bundle(tiny_bundle, tmp_path_factory):
    return exported_before_prompts(tiny_bundle, tmp_path_factory.mktemp("old") / "bundle")


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_bundle_exported_before_prompts_describes_without_them_as_before(tiny_bundle, old_bundle, num_beams):
    old, new = Describer.from_bundle(old_bundle), Describer.from_bundle(tiny_bundle)
    assert "padding" not in load_bundle(old_bundle).graph_inputs("llm")
    for describer in (old, new):
        describer.configure(num_beams=num_beams, max_new_tokens=8, min_new_tokens=2)
    ours, theirs = old.describe_image_regions(IMAGE, BOXES), new.describe_image_regions(IMAGE, BOXES)
    assert [d.token_ids for d in ours] == [d.token_ids for d in theirs]
    assert [d.score for d in ours] == [d.score for d in theirs]
    assert [d.token_ids for d in old.describe_image_regions(IMAGE, BOXES, prompts=["", "", ""])] == \
        [d.token_ids for d in ours]


def test_a_bundle_exported_before_prompts_refuses_one_naming_what_is_missing(old_bundle):
    with pytest.raises(ValueError) as error:
        Describer.from_bundle(old_bundle).describe_image_regions(IMAGE, BOXES, prompts=["", "what shape?", ""])
    assert str(error.value) == (
        f"bundle {old_bundle}'s llm graph has no padding input, so it cannot take text prompts (it was exported "
        "before them): describe without prompts, or re-export the bundle with python -m export.onnx")


# The command line

@pytest.fixture(scope="module")
def frame(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("frame") / "frame.png"
    Image.fromarray(IMAGE).save(path)
    return path


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_the_cli_asks_every_region_its_prompt(tiny_bundle, frame, capsys):
    args = ["--bundle", str(tiny_bundle), "--image", str(frame), "--box", "0,0,30,30", "--box", "10,5,60,45",
            "--max-new-tokens", "6"]
    assert describe_main(args + ["--prompt", QUESTION]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    describer = Describer.from_bundle(tiny_bundle)
    describer.configure(max_new_tokens=6)
    expected = describer.describe_image_regions(IMAGE, [[0, 0, 30, 30], [10, 5, 60, 45]], prompts=[QUESTION] * 2)
    assert [line.split(": ", 1)[1].rsplit(" (score", 1)[0] for line in lines] == [d.text for d in expected]


@pytest.mark.parametrize("extra, message", [
    (["--prompt", "red " * 40], f"prompt 'red red .* has \\d+ tokens, more than the {MAX_PROMPT_TOKENS} a prompt "
                                "may have: shorten it"),
    (["--prompt", "what?", "--verify"], None),
])
def test_the_cli_refuses_a_bad_prompt_in_one_line(tiny_bundle, frame, capsys, extra, message):
    import re

    if message is None:  # --prompt without anything to ask about
        code = describe_main(["--bundle", str(tiny_bundle), *extra])
        message = "--prompt goes with --image or --points: it asks about what they show"
    else:
        code = describe_main(["--bundle", str(tiny_bundle), "--image", str(frame), *extra])
    assert code == 2
    assert re.fullmatch(f"runtime.cli: {message}", error_line(capsys))


def test_the_cli_with_a_prompt_and_a_bundle_exported_before_prompts_says_re_export(old_bundle, frame, capsys):
    assert describe_main(["--bundle", str(old_bundle), "--image", str(frame), "--prompt", "what?"]) == 2
    assert error_line(capsys).endswith("cannot take text prompts (it was exported before them): describe without "
                                       "prompts, or re-export the bundle with python -m export.onnx")


# TensorRT profiles

def test_the_llm_profile_takes_bos_and_the_longest_prompt_in_prefill(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    profile = derive_profiles(manifest, Limits(max_batch=2, max_regions=5))["llm"]
    queries, new_tokens = manifest.model["num_query_tokens"], manifest.generation.max_new_tokens
    assert profile.axes["tokens"] == (1, 1, 1 + MAX_PROMPT_TOKENS)
    assert profile.axes["past"][2] == queries + 1 + MAX_PROMPT_TOKENS + new_tokens - 1
    assert profile.shapes["padding"] == {"min": [1, 2], "opt": [4, 2], "max": [5, 2]}
    assert any(c["tokens"] == 1 + MAX_PROMPT_TOKENS and c["past"] == 0 for c in profile.checks)
    assert all(c["tokens"] == 1 for c in profile.checks if c["past"] > 0)


def test_the_llm_profile_of_a_bundle_exported_before_prompts_takes_bos_alone(old_bundle):
    manifest = load_bundle(old_bundle).manifest
    axes = derive_profiles(manifest, Limits())["llm"].axes
    assert axes["tokens"] == (1, 1, 1)
    assert axes["past"][2] == manifest.model["num_query_tokens"] + manifest.generation.max_new_tokens


def test_the_prompt_room_shrinks_where_the_models_positions_end_sooner(tiny_bundle):
    manifest = load_bundle(tiny_bundle).manifest
    positions, queries = manifest.model["text"]["max_position_embeddings"], manifest.model["num_query_tokens"]
    new_tokens = positions - queries - 1 - 10  # room for 10 prompt tokens only
    axes = derive_profiles(manifest, Limits(max_new_tokens=new_tokens))["llm"].axes
    assert axes["tokens"] == (1, 1, 11)
    assert axes["past"][2] == positions - 1


def test_a_random_llm_feed_has_valid_padding(tiny_bundle):
    from export.trt_profiles import random_feeds

    manifest = load_bundle(tiny_bundle).manifest
    feeds = random_feeds(manifest, "llm", {"batch": 50, "prefix": 4, "tokens": 3, "past": 6},
                         np.random.default_rng(0))
    start, end = feeds["padding"].T
    assert feeds["padding"].dtype == np.int64 and feeds["padding"].shape == (50, 2)
    assert ((0 <= start) & (start <= end) & (end < 13)).all() and (end > start).any()


def test_manifest_lists_the_padding_input(tiny_bundle):
    spec = next(s for s in load_bundle(tiny_bundle).manifest.graphs["llm"].inputs if s.name == "padding")
    assert dataclasses.astuple(spec) == ("padding", ["batch", 2], "int64")
