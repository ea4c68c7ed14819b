"""Caption metrics agree with pycocoevalcap's own scorers; attribute exact match reads size/colour/shape words."""

import shutil

import pytest

from training import metrics
from training.metrics import attribute_exact_match, caption_metrics

java = pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer and METEOR need java")

PREDICTIONS = {1: "a large red circle", 2: "a small cube left of a large sphere", 3: "A man riding a horse."}
REFERENCES = {1: ["a large red circle", "a big red circle"], 2: ["a small cube right of a large sphere"],
              3: ["A man rides a horse!", "a person on a brown horse"]}


@java
def test_scores_equal_pycocoevalcap_scorers_on_ptb_tokenised_input():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = PTBTokenizer().tokenize({k: [{"caption": r} for r in v] for k, v in REFERENCES.items()})
    res = PTBTokenizer().tokenize({k: [{"caption": p}] for k, p in PREDICTIONS.items()})
    scores = caption_metrics(PREDICTIONS, REFERENCES, meteor=False, spice=False)
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    assert [scores[f"Bleu_{n}"] for n in (1, 2, 3, 4)] == bleu
    assert scores["ROUGE_L"] == Rouge().compute_score(gts, res)[0]
    assert scores["CIDEr"] == Cider().compute_score(gts, res)[0]
    assert scores["agg_metrics"] == scores["CIDEr"] + scores["Bleu_4"]


@java
def test_prediction_equal_to_its_reference_scores_one():
    captions = {1: "a large red circle and a small blue square", 2: "a small cone left of a large cube"}
    scores = caption_metrics(captions, {k: [v] for k, v in captions.items()}, meteor=False, spice=False)
    assert scores["Bleu_4"] == pytest.approx(1.0) and scores["ROUGE_L"] == pytest.approx(1.0)


def test_without_java_a_regex_tokenizer_drops_case_and_punctuation(monkeypatch):
    monkeypatch.setattr(metrics, "java_available", lambda: False)
    assert metrics.tokenize({1: [{"caption": "A man, riding a HORSE."}]}) == {1: ["a man riding a horse"]}
    scores = caption_metrics({1: "A red circle."}, {1: ["a red circle"]}, meteor=False, spice=False)
    assert scores["Bleu_1"] == pytest.approx(1.0)


def test_requiring_meteor_without_java_is_an_error(monkeypatch):
    monkeypatch.setattr(metrics, "java_available", lambda: False)
    with pytest.raises(RuntimeError, match="METEOR needs java on PATH"):
        caption_metrics({1: "a cube"}, {1: ["a cube"]}, meteor=True)


def test_predictions_and_references_must_cover_the_same_ids():
    with pytest.raises(ValueError, match="same ids"):
        caption_metrics({1: "a cube"}, {2: ["a cube"]})


@pytest.mark.slow
@java
def test_meteor_equals_pycocoevalcap_meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    gts = metrics.tokenize({k: [{"caption": r} for r in v] for k, v in REFERENCES.items()})
    res = metrics.tokenize({k: [{"caption": p}] for k, p in PREDICTIONS.items()})
    assert caption_metrics(PREDICTIONS, REFERENCES, meteor=True, spice=False)["METEOR"] == Meteor().compute_score(gts, res)[0]


REGION = {"size": "small", "colour": "green", "shape": "triangle"}


def test_region_exact_match_is_perfect_for_the_ground_truth_caption():
    assert attribute_exact_match(["a small green triangle"], [REGION], "image_region") == {
        "image_region/exact_match": 1.0, "image_region/size": 1.0, "image_region/colour": 1.0, "image_region/shape": 1.0}


def test_region_exact_match_scores_each_attribute():
    scores = attribute_exact_match(["a small red triangle", "a large green triangle", "nothing"],
                                   [REGION] * 3, "image_region")
    assert scores["image_region/exact_match"] == 0.0
    assert scores["image_region/size"] == pytest.approx(1 / 3)
    assert scores["image_region/colour"] == pytest.approx(1 / 3)
    assert scores["image_region/shape"] == pytest.approx(2 / 3)


def test_whole_image_exact_match_ignores_order_but_not_count():
    truth = {"objects": [{"size": "large", "colour": "red", "shape": "circle"},
                         {"size": "small", "colour": "blue", "shape": "square"}]}
    scores = attribute_exact_match(["a small blue square and a large red circle", "a large red circle"],
                                   [truth, truth], "image")
    assert scores == {"image/exact_match": 0.5, "image/object_count": 0.5}


def test_point_region_scores_the_described_object_not_its_neighbour():
    truth = {"size": "small", "shape": "cone", "relation": "left of", "other_size": "large", "other_shape": "cube"}
    scores = attribute_exact_match(["a small cone left of a large cube", "a large cube"], [truth, truth],
                                   "pointcloud_region")
    assert scores["pointcloud_region/exact_match"] == 0.5 and scores["pointcloud_region/shape"] == 0.5


@pytest.mark.parametrize("modality", ["image", "image_region", "pointcloud", "pointcloud_region"])
def test_synthetic_ground_truth_captions_score_perfect_exact_match(modality):
    from training.data.synthetic_images import SyntheticImageDataset
    from training.data.synthetic_points import SyntheticPointDataset

    dataset = (SyntheticImageDataset(modality, split="eval", image_size=32) if modality.startswith("image")
               else SyntheticPointDataset(modality, split="eval", num_points=64))
    samples = [dataset[i] for i in range(15)]
    scores = attribute_exact_match([s.caption for s in samples], [s.attributes for s in samples], modality)
    assert scores[f"{modality}/exact_match"] == 1.0
