"""The Describer: backends agree, beam search scores well, bad input is refused with the reason."""
import re
import json
import shutil

import numpy as np
import pytest

from runtime import Cancelled, Describer
from runtime.bundle import BundleError
from runtime.cli import main as describe_main
from tests.describer_inputs import BOXES, CALLS, CORNERS, IMAGE, SCENE


@pytest.mark.parametrize("modality", list(CALLS))
def test_onnxruntime_and_torch_backends_give_the_same_greedy_tokens(onnx_describer, torch_describer, modality):
    for describer in (onnx_describer, torch_describer):
        describer.configure(num_beams=1, max_new_tokens=8, min_new_tokens=0)
    ours, reference = CALLS[modality](onnx_describer), CALLS[modality](torch_describer)
    assert [d.token_ids for d in ours] == [d.token_ids for d in reference]
    np.testing.assert_allclose([d.score for d in ours], [d.score for d in reference], atol=1e-4)
    assert [d.text for d in ours] == [d.text for d in reference]


def test_beam_search_scores_at_least_as_high_as_greedy(onnx_describer):
    onnx_describer.configure(num_beams=1, max_new_tokens=8, min_new_tokens=2)
    greedy = onnx_describer.describe_image_regions(IMAGE, BOXES)
    onnx_describer.configure(num_beams=4)
    beam = onnx_describer.describe_image_regions(IMAGE, BOXES)
    assert all(b.score >= g.score - 1e-6 for b, g in zip(beam, greedy))


def test_a_frames_regions_share_one_call_and_report_its_timings(onnx_describer):
    onnx_describer.configure(num_beams=1, max_new_tokens=4)
    results = onnx_describer.describe_image_regions(IMAGE, BOXES)
    assert len(results) == 3
    assert {"preprocess", "encode", "qformer", "decode", "total"} <= set(results[0].timings_ms)
    assert all(r.timings_ms == results[0].timings_ms for r in results)


def test_zero_regions_give_an_empty_result(onnx_describer):
    assert onnx_describer.describe_image_regions(IMAGE, np.zeros((0, 4))) == []
    assert onnx_describer.describe_point_regions(SCENE, np.zeros((0, 8, 3))) == []


def test_a_box_partly_outside_is_described_as_its_clipped_part(onnx_describer):
    onnx_describer.configure(num_beams=1, max_new_tokens=6)
    outside, clipped = onnx_describer.describe_image_regions(IMAGE, [[-20, -10, 30, 70], [0, 0, 30, 48]])
    assert outside.token_ids == clipped.token_ids


@pytest.mark.parametrize("boxes, reason", [
    ([[10, 10, 5, 20]], "box 0: .*negative size"),
    ([[100, 100, 120, 130]], "box 0: .*outside the image"),
    ([[5, 5, 5, 20]], "box 0: .*zero width"),
])
def test_unusable_boxes_come_back_with_the_reason(onnx_describer, boxes, reason):
    (refused,) = onnx_describer.describe_image_regions(IMAGE, boxes)
    assert re.search(reason.removeprefix("box 0: "), refused.problem)
    assert refused.text == "" and refused.token_ids == () and np.isnan(refused.score)


def test_an_unusable_box_leaves_the_others_described_in_their_places(onnx_describer):
    onnx_describer.configure(num_beams=1, max_new_tokens=6)
    alone = onnx_describer.describe_image_regions(IMAGE, BOXES)
    mixed = onnx_describer.describe_image_regions(IMAGE, [BOXES[0], [np.nan] * 4, *BOXES[1:]])
    assert mixed[1].problem is not None
    assert [d.token_ids for d in mixed[:1] + mixed[2:]] == [d.token_ids for d in alone]
    assert all(d.problem is None for d in alone)


def test_a_point_box_beyond_float32_is_refused_alone(onnx_describer):
    onnx_describer.configure(num_beams=1, max_new_tokens=6)
    huge = CORNERS[0].astype(np.float64) * 1e300
    described = onnx_describer.describe_point_regions(SCENE, np.stack([CORNERS[0], huge]))
    assert described[0].problem is None and described[0].token_ids
    assert "not all finite" in described[1].problem


def test_a_cloud_near_float32s_limit_is_refused_with_the_reason_not_described_as_empty_text(onnx_describer):
    onnx_describer.configure(num_beams=1, max_new_tokens=6)
    (described,) = onnx_describer.describe_point_regions(SCENE * 1e38, CORNERS[:1] * 1e38)
    assert described.text == "" and np.isnan(described.score)
    assert described.problem.startswith("the model's scores for it are not finite")


def test_a_whole_object_near_float32s_limit_is_normalised_without_overflow(onnx_describer):
    onnx_describer.configure(num_beams=1, max_new_tokens=6)
    huge, unit = onnx_describer.describe_point_objects([SCENE.astype(np.float64) * 1e38, SCENE])
    assert huge.problem is None and huge.token_ids == unit.token_ids


@pytest.mark.parametrize("modality", list(CALLS))
def test_a_cancelled_describer_refuses_every_later_call(tiny_bundle, modality):
    describer = Describer.from_bundle(tiny_bundle)
    describer.cancel()
    with pytest.raises(Cancelled, match="cancelled"):
        CALLS[modality](describer)


def test_cancelling_mid_decode_stops_at_the_next_step(tiny_bundle):
    describer = Describer.from_bundle(tiny_bundle)
    describer.configure(num_beams=1, max_new_tokens=20, min_new_tokens=20)
    steps = []
    run = describer.engine.runner.run

    def counting_run(graph, feeds, outputs=None):
        if graph == "llm":
            steps.append(graph)
            if len(steps) == 3:
                describer.cancel()  # as another thread would, during the third step
        return run(graph, feeds, outputs)

    describer.engine.runner.run = counting_run
    with pytest.raises(Cancelled, match="between decode steps"):
        describer.describe_image_regions(IMAGE, BOXES)
    assert len(steps) == 3


@pytest.mark.parametrize("image, reason", [
    (IMAGE.astype(np.float32), "dtype float32"),
    (IMAGE[..., 0], "shape"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
])
def test_bad_images_are_rejected_with_the_reason(onnx_describer, image, reason):
    with pytest.raises(ValueError, match=reason):
        onnx_describer.describe_image_regions(image, BOXES)


def test_a_tampered_bundle_is_rejected_on_load(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    (copy / "tokenizer" / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError, match="tokenizer.json does not match its sha256"):
        Describer.from_bundle(copy)


def test_a_bundle_of_another_format_names_the_fix(tiny_bundle, tmp_path):
    copy = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))
    with pytest.raises(BundleError, match="format 1, this runtime reads format 2: re-export"):
        Describer.from_bundle(copy)


def test_the_cli_prints_one_line_per_region(tiny_bundle, tmp_path, capsys):
    from PIL import Image
    Image.fromarray(IMAGE).save(tmp_path / "frame.png")
    np.save(tmp_path / "scene.npy", SCENE)
    assert describe_main(["--bundle", str(tiny_bundle), "--image", str(tmp_path / "frame.png"),
                          "--box", "0,0,30,30", "--box", "10,5,60,45", "--max-new-tokens", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("box 0 [0,0,30,30]: ") and "score" in lines[0]
    assert describe_main(["--bundle", str(tiny_bundle), "--points", str(tmp_path / "scene.npy"),
                          "--box3d", "0,0,0,1,1,1,0.3", "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("box3d 0 [0,0,0,1,1,1,0.3]: ")


@pytest.mark.parametrize("args, message", [
    (["--image", "{tmp}/missing.png", "--box", "0,0,5,5"], "does not exist"),
    (["--image", "{tmp}/frame.png", "--box", "0,0,5"], "'0,0,5' is not 4 comma-separated numbers"),
    (["--image", "{tmp}/frame.png", "--box3d", "0,0,0,1,1,1"], "--box3d with --points"),
])
def test_the_cli_rejects_bad_arguments_in_one_line(tiny_bundle, tmp_path, capsys, args, message):
    from PIL import Image
    Image.fromarray(IMAGE).save(tmp_path / "frame.png")
    assert describe_main(["--bundle", str(tiny_bundle)] + [a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
