"""training.benchmarks: RefCOCO / ScanRefer / Cap3D evaluated as RegionBLIP does, on fixture files in the upstream
formats (tests/benchmark_fixtures.py): one prediction per region, all of its descriptions as references."""

import json
import re
import shutil

import pytest

from contract.generation import RELEASE_EVALUATION
from training import benchmarks, evaluate, metrics
from training.benchmarks import Benchmark
from training.data.samples import DataError

from tests.benchmark_fixtures import (CAP3D_KEYS, REFCOCO_KEYS, SCANREFER_KEYS, cli_options, write_all, write_refcoco,
                                      write_scanrefer)

java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need java")
POINTS = dict(object_num_points=64, scene_num_points=64)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("benchmarks"))


def files_of(fixtures, source):
    return {key: fixtures[key] for key in benchmarks.REAL_SOURCES[source][1]}


def regions_of(fixtures, source, split):
    return benchmarks.load(Benchmark(source, split), files_of(fixtures, source), **POINTS)


def test_three_descriptions_of_one_refcoco_box_are_one_prediction_with_three_references(fixtures):
    dataset, regions = regions_of(fixtures, "refcoco", "test")
    assert [r.key for r in regions] == REFCOCO_KEYS  # the boxes of image 9 stay apart; the train ref stays out
    assert regions[0].references == ["man on the left", "left guy in red", "the man in a red shirt"]
    assert [len(r.references) for r in regions] == [3, 2, 1]
    assert [dataset[r.index].attributes["ref_id"] for r in regions] == [1, 2, 3]  # described from its first sentence


def test_region_json_keys_truncate_boxes_and_fall_back_to_the_image_file_name(tmp_path):
    write_refcoco(tmp_path)  # for its images
    entries = [{"image": "COCO_train2014_000000000009.jpg", "bbox": [10.2, 20.9, 60.0, 50.0], "caption": "left man"},
               {"image": "COCO_train2014_000000000009.jpg", "bbox": [10.7, 20.1, 60.4, 50.0], "caption": "Red Man."},
               {"image": "COCO_train2014_000000000009.jpg", "bbox": [10.7, 20.1, 60.4, 50.0], "caption": "him",
                "image_id": 9}]
    (tmp_path / "Refcoco_test.json").write_text(json.dumps(entries))
    _, regions = benchmarks.load(Benchmark("region_json", "test"), {"path": tmp_path / "Refcoco_test.json",
                                                                   "image_root": tmp_path / "train2014"}, **POINTS)
    assert [(r.key, r.references) for r in regions] == [
        ("COCO_train2014_000000000009.jpg_box_10_20_60_50", ["left man", "Red Man."]), ("9_box_10_20_60_50", ["him"])]


def test_scanrefer_groups_by_scene_and_object(fixtures):
    dataset, regions = regions_of(fixtures, "scanrefer", "val")
    assert [r.key for r in regions] == SCANREFER_KEYS  # object 3 of two scenes stays apart
    assert regions[0].references == ["This is a brown chair. It is next to the table.",
                                     "The chair is brown and faces the table."]
    assert [len(r.references) for r in regions] == [2, 1, 3]
    assert dataset[regions[2].index].attributes["ann_id"] == "0"


def test_an_object_the_reader_skips_is_left_out_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "java_available", lambda: False)
    files = write_scanrefer(tmp_path)
    entries = json.loads(files["scanrefer_json"].read_text())
    files["scanrefer_json"].write_text(json.dumps(entries + [{**entries[0], "object_id": "42"}]))
    dataset, regions = benchmarks.load(Benchmark("scanrefer", "val"), files, **POINTS)
    assert [r.key for r in regions] == SCANREFER_KEYS
    results = {"checkpoint": "ckpt", "generation": dict(num_beams=5, min_new_tokens=8, max_new_tokens=30),
               "tokenizer": "regex", "benchmarks": [benchmarks.result(Benchmark("scanrefer", "val"), files, dataset,
                                                                       regions, ["a chair"] * 3)]}
    assert "scanrefer:val: 1 annotations skipped by the reader" in benchmarks.table(results)


def test_cap3d_references_are_every_line_of_the_uid_as_the_file_has_it(fixtures):
    dataset, regions = regions_of(fixtures, "cap3d", "test")
    assert [r.key for r in regions] == CAP3D_KEYS
    assert regions[0].references == ["A wooden Chair, with four legs.", "a brown wooden chair"]
    assert dataset[regions[0].index].caption == "a wooden chair, with four legs"  # the reader still cleans


def test_a_refcoco_split_without_refs_names_the_splits_there(fixtures):
    with pytest.raises(DataError, match=r"has no refs of split 'testA' \(it has \['test', 'train'\]\)"):
        regions_of(fixtures, "refcoco", "testA")


def _tokenised(regions, predictions):
    gts = metrics.tokenize({r.key: [{"caption": c} for c in r.references] for r in regions})
    res = metrics.tokenize({r.key: [{"caption": p}] for r, p in zip(regions, predictions)})
    return gts, res


def test_predictions_equal_to_any_of_their_references_score_one_and_cider_is_pycocoevalcaps(fixtures, monkeypatch):
    from pycocoevalcap.cider.cider import Cider

    monkeypatch.setattr(metrics, "java_available", lambda: False)  # the regex tokenizer: seconds, not java starts
    dataset, regions = regions_of(fixtures, "refcoco", "test")
    predictions = ["the man in a red shirt", "right lady", "small brown dog"]  # not always the first reference
    result = benchmarks.result(Benchmark("refcoco", "test"), {}, dataset, regions, predictions)
    assert result["scores"]["Bleu_4"] == pytest.approx(1.0) and result["scores"]["ROUGE_L"] == pytest.approx(1.0)
    gts, res = _tokenised(regions, predictions)
    assert result["scores"]["CIDEr"] == Cider().compute_score(gts, res)[0]
    # against the first description alone (no grouping) the same predictions score far lower
    first_only = metrics.caption_metrics(dict(zip(REFCOCO_KEYS, predictions)),
                                         {r.key: r.references[:1] for r in regions}, meteor=False, spice=False)
    assert first_only["Bleu_4"] < 0.5 and first_only["CIDEr"] < result["scores"]["CIDEr"]
    assert (result["regions"], result["references"], result["published"]) == (3, 6, {
        "model": "RegionBLIP-OPT-2.7B", "CIDEr": 63.5})
    assert result["predictions"][1] == {"image_id": "9_box_100_10_80_70", "caption": "right lady"}


@java
def test_meteor_runs_on_the_grouped_references_when_java_is_present(fixtures, monkeypatch):
    # METEOR's own java run is what is tested (one start of its jar); PTB tokenisation by java is tested in test_metrics
    monkeypatch.setattr(metrics, "tokenize", metrics._simple_tokenize)
    dataset, regions = regions_of(fixtures, "scanrefer", "val")
    predictions = [regions[0].references[1], regions[1].references[0], regions[2].references[2]]
    result = benchmarks.result(Benchmark("scanrefer", "val"), {}, dataset, regions, predictions)
    assert result["scores"]["METEOR"] == pytest.approx(1.0)  # METEOR 1.5 scores an exact match of any reference 1
    assert "METEOR" not in result["absent"]


def test_without_java_meteor_is_absent_with_its_reason_not_a_number(fixtures, monkeypatch):
    monkeypatch.setattr(metrics, "java_available", lambda: False)
    dataset, regions = regions_of(fixtures, "cap3d", "test")
    result = benchmarks.result(Benchmark("cap3d", "test"), {}, dataset, regions, ["a chair", "a car", "a mug"])
    assert "METEOR" not in result["scores"] and "SPICE" not in result["scores"]
    assert result["absent"]["METEOR"].startswith("not run: METEOR needs java on PATH")
    assert "download" in result["absent"]["SPICE"]


@pytest.fixture
def fake_generation(monkeypatch):
    """Captions without a model: records each call's decoding, describes every sample as 'a chair'."""
    calls = []

    def generate_captions(model, tokenizer, modality, samples, *, batch_size, generation, progress=False):
        calls.append((modality, len(samples), generation))
        return ["a chair"] * len(samples)

    monkeypatch.setattr(evaluate, "generate_captions", generate_captions)
    return calls


def test_benchmarks_decode_with_the_release_settings_unless_overridden(tiny_checkpoint, fixtures, fake_generation,
                                                                       monkeypatch, capsys):
    monkeypatch.setattr(metrics, "java_available", lambda: False)  # the regex tokenizer: fast
    release = {"num_beams": RELEASE_EVALUATION.num_beams, "max_new_tokens": RELEASE_EVALUATION.max_new_tokens,
               "min_new_tokens": RELEASE_EVALUATION.min_new_tokens}
    options = ["--ckpt", str(tiny_checkpoint), *cli_options(files_of(fixtures, "cap3d"))]
    assert evaluate.main(["--data", "cap3d:test", *options]) == 0
    assert evaluate.main(["--data", "cap3d:test", "--beams", "2", "--min-new-tokens", "1", *options]) == 0
    assert fake_generation == [("pointcloud", 3, release), ("pointcloud", 3, {**release, "num_beams": 2,
                                                                              "min_new_tokens": 1})]
    assert "decoding: beam 2, 1-" in capsys.readouterr().out


def test_cli_on_the_fixtures_prints_the_readme_table_and_writes_json(tiny_checkpoint, fixtures, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setattr(metrics, "java_available", lambda: False)  # keeps it to seconds; METEOR is tested above
    out = tmp_path / "benchmarks.json"
    code = evaluate.main(["--ckpt", str(tiny_checkpoint), "--data", "refcoco:test,scanrefer:val,cap3d:test",
                          *cli_options(fixtures), "--beams", "1", "--min-new-tokens", "1", "--max-new-tokens", "3",
                          "--label", "FIXTURE FILES, not the benchmark data", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == "## FIXTURE FILES, not the benchmark data"
    assert lines[3] == ("| Benchmark | Regions | References | CIDEr | BLEU-4 | METEOR | ROUGE-L | SPICE | "
                        "RegionBLIP-OPT-2.7B CIDEr (published) |")
    rows = [line for line in lines if line.startswith("| ") and "captioning" in line]
    assert [re.match(r"\| ([^|]+) \| 3 \| 6 \|", row).group(1) for row in rows] == [
        "I-region captioning (RefCOCO test)", "P-region captioning (ReferScannet val)",
        "PCD captioning (Objaverse test)"]
    assert [row.split(" | ")[-1] for row in rows] == ["63.5 |", "57.0 |", "112.7 |"]
    assert all(row.split(" | ")[5] == "—" for row in rows)  # METEOR absent without java
    assert any(line.startswith("METEOR not run: METEOR needs java") for line in lines)
    results = json.loads(out.read_text())
    assert results["label"] == "FIXTURE FILES, not the benchmark data"
    assert [len(b["predictions"]) for b in results["benchmarks"]] == [3, 3, 3]
    assert results["benchmarks"][1]["examples"][0]["references"][0].startswith("This is a brown chair")


@pytest.mark.parametrize("data, extra, message", [
    ("refcoco:tset", [], "refcoco split must be one of ['train', 'val', 'test', 'testA', 'testB']"),
    ("scanrefer:val+train", [], "scanrefer split must be one of ['train', 'val'], got 'val+train'"),
    ("refcoco:test,refcoco:val", [], "names refcoco twice"),
    ("coco:test", [], "unknown source 'coco'"),
    ("refcoco:test,synthetic:image", [], "synthetic data is evaluated on its own run"),
    ("scanrefer:val", [], "scanrefer:val needs --scanrefer-json"),
    ("scanrefer:val", ["--scanrefer-json", "{tmp}/absent.json", "--scannet-dir", "{tmp}"],
     "--scanrefer-json {tmp}/absent.json is not a file: check the path"),
    ("scanrefer:val", ["--scanrefer-json", "{tmp}/f.json", "--scannet-dir", "{tmp}/f.json"],
     "--scannet-dir {tmp}/f.json is not a directory"),
    ("cap3d:test", ["--captions-file", "{tmp}/f.json", "--points-dir", "{tmp}", "--refs-json", "{tmp}/f.json"],
     "--refs-json given but --data names no benchmark that reads it"),
    ("cap3d:test", ["--image-size", "64"], "--image-size applies to synthetic data only"),
    ("synthetic:image", ["--scannet-dir", "{tmp}"], "--scannet-dir applies to benchmark data"),
    ("cap3d:test", ["--num", "0"], "--num is 0: give at least 1"),
])
def test_bad_benchmark_specs_and_paths_are_one_line_before_any_generation(tiny_checkpoint, tmp_path, capsys,
                                                                          monkeypatch, data, extra, message):
    monkeypatch.setattr(evaluate, "generate_captions", lambda *a, **k: pytest.fail("evaluation started"))
    (tmp_path / "f.json").write_text("[]")
    code = evaluate.main(["--ckpt", str(tiny_checkpoint), "--data", data, *[a.format(tmp=tmp_path) for a in extra]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert message.format(tmp=tmp_path) in err
