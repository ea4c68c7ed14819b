"""Image-region readers on fixture files in the real formats: RegionBLIP's region JSON and RefCOCO (COCO + refs JSON)."""

import json
import logging

import numpy as np
import pytest
from PIL import Image

from training.data.refcoco import load_refcoco
from training.data.region_captions import load_region_json
from training.data.samples import DataError


def _write_image(path, width=200, height=100):
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :, 0] = 200
    Image.fromarray(pixels).save(path)


def _region_json(tmp_path, entries):
    (tmp_path / "images").mkdir(exist_ok=True)
    _write_image(tmp_path / "images" / "a.jpg")
    path = tmp_path / "regions.json"
    path.write_text(json.dumps(entries))
    return path


def test_region_json_yields_normalised_boxes_and_cleaned_captions(tmp_path):
    path = _region_json(tmp_path, [
        {"image": "a.jpg", "bbox": [20.6, 10.0, 100.0, 50.0], "caption": "The Man ON the left.", "image_id": 7}])
    dataset = load_region_json(path, tmp_path / "images")
    sample = dataset[0]
    assert len(dataset) == 1 and sample.modality == "image_region"
    assert sample.image.shape == (100, 200, 3) and sample.image.dtype == np.uint8
    np.testing.assert_allclose(sample.box_xyxy, [20 / 200, 10 / 100, 120 / 200, 60 / 100])
    assert sample.caption == "the man on the left"
    assert sample.attributes["image_id"] == 7 and sample.attributes["entry"] == "[0]"


def test_region_json_caption_list_gives_one_sample_per_caption(tmp_path):
    path = _region_json(tmp_path, [{"image": "a.jpg", "bbox": [0, 0, 10, 10], "caption": ["red car", "a car"]}])
    assert [s.caption for s in load_region_json(path, tmp_path / "images")] == ["red car", "a car"]


def test_bad_region_entries_are_skipped_and_named(tmp_path, caplog):
    path = _region_json(tmp_path, [
        {"image": "a.jpg", "bbox": [10, 10, 20, 20], "caption": "good"},
        {"image": "missing.jpg", "bbox": [10, 10, 20, 20], "caption": "no image"},
        {"image": "a.jpg", "bbox": [500, 10, 20, 20], "caption": "box outside"},
        {"image": "a.jpg", "caption": "no box"},
    ])
    with caplog.at_level(logging.WARNING, logger="training.data"):
        dataset = load_region_json(path, tmp_path / "images")
    assert [s.caption for s in dataset] == ["good"]
    problems = sorted(p.split(" entry ", 1)[1] for p in dataset.problems)
    assert len(problems) == 3
    assert problems[0].startswith("[1]: image") and problems[0].endswith("missing.jpg does not exist")
    assert problems[1].startswith("[2]: box xywh=[500.0, 10.0, 20.0, 20.0] has no area inside the 200x100 image")
    assert problems[2].startswith("[3]: malformed entry (KeyError('bbox'))")
    assert all(f"skipping {path} entry" in p for p in dataset.problems)
    assert sum("skipping" in r.message for r in caplog.records) == 3


def test_region_json_with_nothing_valid_raises_listing_the_problems(tmp_path):
    path = _region_json(tmp_path, [{"image": "missing.jpg", "bbox": [0, 0, 5, 5], "caption": "x"}])
    with pytest.raises(DataError, match=r"no usable image regions remain after 1 problems:\n.*missing.jpg"):
        load_region_json(path, tmp_path / "images")


def test_corrupt_image_is_reported_with_file_and_entry_when_loaded(tmp_path):
    path = _region_json(tmp_path, [{"image": "a.jpg", "bbox": [0, 0, 5, 5], "caption": "x"}])
    dataset = load_region_json(path, tmp_path / "images")
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError, match=r"cannot decode image .*a.jpg .*entry \[0\]"):
        dataset[0]


def _refcoco(tmp_path):
    (tmp_path / "train2014").mkdir()
    _write_image(tmp_path / "train2014" / "COCO_train2014_000000000009.jpg", 640, 480)
    instances = {
        "images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 640, "height": 480}],
        "annotations": [{"id": 101, "image_id": 9, "bbox": [64.4, 48.0, 320.0, 240.9], "category_id": 1}],
        "categories": [{"id": 1, "name": "person"}],
    }
    refs = [
        {"ref_id": 1, "ann_id": 101, "image_id": 9, "split": "train", "category_id": 1,
         "sentences": [{"sent": "Man in red shirt", "sent_id": 1}, {"sent": "left guy!", "sent_id": 2}]},
        {"ref_id": 2, "ann_id": 101, "image_id": 9, "split": "testA", "sentences": [{"sent": "the man"}]},
        {"ref_id": 3, "ann_id": 999, "image_id": 9, "split": "train", "sentences": [{"sent": "ghost"}]},
    ]
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    return tmp_path / "instances.json", tmp_path / "refs.json", tmp_path / "train2014"


def test_refcoco_gives_one_sample_per_sentence_of_the_split(tmp_path):
    instances, refs, images = _refcoco(tmp_path)
    dataset = load_refcoco(instances, refs, images, split="train")
    assert [s.caption for s in dataset] == ["man in red shirt", "left guy"]
    np.testing.assert_allclose(dataset[0].box_xyxy, [64 / 640, 48 / 480, 384 / 640, 288 / 480])
    assert dataset[0].attributes["ref_id"] == 1 and dataset[0].attributes["ann_id"] == 101


def test_refcoco_ref_with_unknown_annotation_is_reported(tmp_path):
    instances, refs, images = _refcoco(tmp_path)
    dataset = load_refcoco(instances, refs, images, split="train")
    assert dataset.problems == [f"refcoco train: skipping {refs} entry ref_id=3: ann_id=999 is not in instances.json"]


def test_refcoco_test_split_is_selected_by_name(tmp_path):
    instances, refs, images = _refcoco(tmp_path)
    assert [s.caption for s in load_refcoco(instances, refs, images, split="testA")] == ["the man"]


def test_refcoco_pickled_refs_are_refused_with_conversion_advice(tmp_path):
    instances, _, images = _refcoco(tmp_path)
    (tmp_path / "refs(unc).p").write_bytes(b"\x80\x04N.")
    with pytest.raises(DataError, match=r"is a pickle; this reader never unpickles. Convert it to JSON"):
        load_refcoco(instances, tmp_path / "refs(unc).p", images)
