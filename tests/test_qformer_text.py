"""The Q-Former's ITC and ITG (training/qformer_text.py): values on hand-checkable inputs, ITG's masking, what trains,
and the caption tokens the trainer feeds them."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_model
from transformers import BertTokenizerFast

from training.config import RegionBLIPConfig
from training.modeling_regionblip import RegionBLIP
from training.qformer_text import contrastive_loss, generation_attention_mask
from training.tasks import CaptionTokens, load_qformer_tokenizer, model_inputs, tokenize_captions
from training.tokenizer import default_tokenizer
from training.trainer_plot import read_losses

TEXT_CONFIG = dataclasses.replace(RegionBLIPConfig.preset("tiny"), qformer_text=True, qformer_text_vocab_size=128,
                                  qformer_text_bos_token_id=2, qformer_embed_dim=16)
IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
POINTS = torch.randn(3, 48, 3, generator=torch.Generator().manual_seed(2))
CORNERS = torch.randn(3, 24, generator=torch.Generator().manual_seed(3))
IDS = torch.randint(3, 100, (3, 6), generator=torch.Generator().manual_seed(4))
MASK = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 5 + [0]])


def text_model() -> RegionBLIP:
    torch.manual_seed(0)
    return RegionBLIP(TEXT_CONFIG).eval()


def smoothed_cross_entropy(target_logit: float, other_logits: list[float], smoothing: float = 0.1) -> float:
    logits = [target_logit, *other_logits]
    log_z = math.log(sum(math.exp(v) for v in logits))
    n = len(logits)
    return -sum(((1 - smoothing) * (k == 0) + smoothing / n) * (v - log_z) for k, v in enumerate(logits))


def test_itc_on_perfectly_aligned_features_is_the_smoothed_cross_entropy_of_one_over_temp():
    eye = torch.eye(4)
    queries = eye[:, None].expand(4, 3, 4)  # every query of sample b is e_b
    expected = smoothed_cross_entropy(1 / 0.07, [0.0] * 3)
    loss = contrastive_loss(queries, eye, torch.tensor(0.07))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the smoothing's 0.1 / 4 on each of 3 wrong texts, at 1 / 0.07 below the right one: 0.075 / 0.07
    assert expected == pytest.approx(0.075 / 0.07, rel=1e-4)
    shuffled = contrastive_loss(queries, eye[[1, 0, 3, 2]], torch.tensor(0.07))
    assert shuffled.item() == pytest.approx(smoothed_cross_entropy(0.0, [1 / 0.07, 0.0, 0.0]), rel=1e-5)


def test_itc_takes_the_best_matching_query_of_each_sample():
    texts = torch.eye(2)
    queries = torch.stack([torch.stack([texts[1], texts[0]]), torch.stack([texts[0], texts[1]])])  # both see both
    loss = contrastive_loss(queries, texts, torch.tensor(1.0))
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)  # every similarity is 1: no preference


def test_itg_mask_lets_text_see_queries_and_earlier_unpadded_text_and_queries_see_only_queries():
    allowed = generation_attention_mask(torch.tensor([[1, 1, 0]]), 2, torch.float32)[0, 0] == 0
    assert allowed.tolist() == [[True, True, False, False, False],
                                [True, True, False, False, False],
                                [True, True, True, False, False],
                                [True, True, True, True, False],
                                [True, True, True, True, False]]


@pytest.mark.parametrize("modality,inputs", [("image_region", dict(pixel_values=IMAGES, boxes=torch.tensor(
    [[0.1, 0.1, 0.5, 0.6], [0.2, 0.3, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]]))), ("pointcloud", dict(points=POINTS))])
def test_itg_logits_are_causal_and_queries_never_see_the_text(modality, inputs):
    model = text_model()
    model.use_modality(modality)
    features = model.encode_frames(modality, inputs.get("pixel_values"), inputs.get("points"))
    path, queries, qformer_features = model._prompt_path(modality, features, inputs.get("boxes"), None, None)
    name = "qformer_pc" if modality == "pointcloud" else "qformer"
    text, qformer = model.qformer_text, model.qformer_for(modality)
    with torch.no_grad():
        query_out, logits = text.generation_logits(qformer, name, queries, qformer_features, IDS, MASK)
        changed = IDS.clone()
        changed[:, 3] = 7
        query_changed, logits_changed = text.generation_logits(qformer, name, queries, qformer_features, changed,
                                                               MASK)
        query_only, _ = path.from_qformer_inputs(queries, qformer_features)
    torch.testing.assert_close(logits_changed[:, :3], logits[:, :3], rtol=0, atol=1e-6)
    assert (logits_changed[0, 3:] - logits[0, 3:]).abs().max() > 1e-4
    torch.testing.assert_close(query_changed, query_out, rtol=0, atol=0)
    torch.testing.assert_close(query_out, query_only, rtol=0, atol=1e-5)


def test_itg_loss_is_next_token_cross_entropy_from_dec_with_no_loss_on_padding():
    model = text_model()
    model.use_modality("pointcloud")
    features = model.encode_frames("pointcloud", points=POINTS)
    _, queries, qformer_features = model._prompt_path("pointcloud", features, None, None, None)
    text, qformer = model.qformer_text, model.qformer_pc
    with torch.no_grad():
        loss = text.itg(qformer, "qformer_pc", queries, qformer_features, IDS, MASK)
        decoder = IDS.clone()
        decoder[:, 0] = 2  # [DEC]'s stand-in: the tokenizer's BOS
        _, logits = text.generation_logits(qformer, "qformer_pc", queries, qformer_features, decoder, MASK)
        log_p = logits.log_softmax(-1)
        terms = [-(0.9 * log_p[b, t - 1, IDS[b, t]] + 0.1 * log_p[b, t - 1].mean())
                 for b in range(3) for t in range(1, 6) if MASK[b, t]]
        padded = IDS.masked_fill(MASK == 0, 99)
        again = text.itg(qformer, "qformer_pc", queries, qformer_features, padded, MASK)
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)
    assert again.item() == pytest.approx(loss.item(), rel=1e-6)


def test_a_regionblip_step_with_itc_and_itg_trains_the_point_text_side_not_the_image_one():
    model = text_model().train()
    model.freeze_for("regionblip")
    outs = [model("pointcloud_region", IDS, MASK, points=POINTS, boxes=CORNERS, qformer_input_ids=IDS,
                  qformer_attention_mask=MASK, itc=True, itg=True),
            model("image_region", IDS, MASK, pixel_values=IMAGES, boxes=torch.tensor([[0.1, 0.1, 0.5, 0.6]] * 3),
                  qformer_input_ids=IDS, qformer_attention_mask=MASK, itc=True, itg=True)]
    for out in outs:
        assert all(torch.isfinite(v) for v in (out.loss, out.lm_loss, out.box_loss, out.itc_loss, out.itg_loss))
        total = out.lm_loss + out.box_loss + out.itc_loss + out.itg_loss
        assert out.loss.item() == pytest.approx(total.item(), rel=1e-6)
    sum(out.loss for out in outs).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name in ("qformer_text.text.qformer_pc.embeddings.word_embeddings.weight",
                 "qformer_text.text.qformer_pc.predictions.transform.dense.weight",
                 "qformer_pc.encoder.layer.0.intermediate.dense.weight", "qformer_text.text_projection.weight",
                 "qformer_text.vision_projection.pointcloud_region.weight",
                 "qformer_text.vision_projection.image_region.weight", "qformer_text.temp"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    frozen = [n for n in grads if n.startswith("qformer_text.text.qformer.") or
              n.startswith("qformer.") and (".intermediate." in n or ".output." in n) and "_query" not in n]
    assert frozen and all(grads[n] is None for n in frozen)
    assert grads["qformer.encoder.layer.0.attention.attention.query.lora_B.image_region.weight"].abs().sum() > 0


def test_a_model_without_the_text_side_refuses_itc_and_keeps_its_checkpoint_keys():
    # the embedded default's weights fill its model exactly (its corner convention aside, which is not checked here)
    values = json.loads(Path("models/default/config.json").read_text())
    values["box_corner_convention"] = RegionBLIPConfig.preset("tiny").box_corner_convention
    plain = RegionBLIP(RegionBLIPConfig.from_dict(values))
    missing, unexpected = load_model(plain, "models/default/model.safetensors", strict=False)
    assert not missing and not unexpected
    assert not hasattr(plain, "qformer_text")
    assert not any(".intermediate." in n or n.startswith("qformer_text") for n, _ in plain.named_parameters())
    model = RegionBLIP(RegionBLIPConfig.preset("tiny"))
    with pytest.raises(ValueError, match="qformer_text=True"):
        model("pointcloud", IDS, MASK, points=POINTS, qformer_input_ids=IDS, qformer_attention_mask=MASK, itc=True)


def test_captions_are_truncated_as_released_and_lose_their_newline_when_cut():
    tokenizer = default_tokenizer()
    long = " ".join(["small red cube left of a large blue sphere"] * 6)
    text = tokenize_captions([long, "a red cube"], tokenizer, max_tokens=32)
    assert text["input_ids"].shape == (2, 32)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][0]
    assert text["input_ids"][0, 0] == tokenizer.bos_token_id and newline not in text["input_ids"][0].tolist()
    assert text["input_ids"][1, int(text["attention_mask"][1].sum()) - 1] == newline


def test_the_qformer_reads_its_own_tokenizer_with_dec_as_bos(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cube"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(tmp_path)  # bert-base-uncased's kind
    qformer_tokenizer = load_qformer_tokenizer(tmp_path)
    assert qformer_tokenizer.bos_token == "[DEC]" and qformer_tokenizer.bos_token_id == len(words)
    batch = {"modality": "pointcloud", "captions": ["a red cube", "a cube"], "points": POINTS[:2]}
    inputs = model_inputs(batch, default_tokenizer(), CaptionTokens(32, itc=True, itg=False,
                                                                    qformer_tokenizer=qformer_tokenizer))
    assert inputs["qformer_input_ids"].tolist() == [[2, 5, 6, 7, 3], [2, 5, 7, 3, 0]]  # [CLS] ... [SEP] [PAD]
    assert inputs["itc"] and not inputs["itg"]
    shared = model_inputs(batch, default_tokenizer(), CaptionTokens(itg=True))  # no tokenizer: the LLM's ids
    assert torch.equal(shared["qformer_input_ids"], shared["input_ids"])


def test_each_loss_term_is_a_curve_of_its_own(tmp_path):
    records = [{"stage": "s", "step": 0, "task": "pc", "loss": 3.0, "lm_loss": 1.0, "box_loss": None,
                "itc_loss": 1.5, "itg_loss": 0.5},
               {"stage": "s", "step": 0, "task": "img", "loss": 2.0, "lm_loss": 2.0, "box_loss": None}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_losses(tmp_path / "metrics.jsonl") == {"s/pc": [(0, 3.0)], "s/pc lm": [(0, 1.0)],
                                                       "s/pc itc": [(0, 1.5)], "s/pc itg": [(0, 0.5)],
                                                       "s/img": [(0, 2.0)]}


def test_a_stage_with_itc_and_itg_logs_each_loss_plots_it_and_saves_the_text_side(tmp_path):
    from tests.test_train import TINY_MODEL
    from training import train
    from training.trainer_config import parse_train_config

    model = {"preset": "tiny", "overrides": {**TINY_MODEL["overrides"], "qformer_text": True,
                                             "qformer_text_vocab_size": 364, "qformer_text_bos_token_id": 2,
                                             "qformer_embed_dim": 16}}
    stage = {"name": "regionblip", "kind": "regionblip", "itc": True, "itg": True, "max_text_tokens": 32, "steps": 2,
             "batch_size": 2, "warmup_steps": 0, "checkpoint_every": 2,
             "tasks": [{"modality": "image_region", "image_size": 48}, {"modality": "pointcloud_region"}]}
    final = train.run_training(parse_train_config({"output_dir": str(tmp_path), "model": model, "stages": [stage]}))
    records = [json.loads(line) for line in (tmp_path / "regionblip" / "metrics.jsonl").read_text().splitlines()]
    assert [r["task"] for r in records] == ["image_region", "pointcloud_region"]
    for record in records:
        parts = [record[k] for k in ("lm_loss", "box_loss", "itc_loss", "itg_loss")]
        assert all(math.isfinite(p) for p in parts) and record["loss"] == pytest.approx(sum(parts), rel=1e-5)
    assert {"regionblip/image_region itc", "regionblip/pointcloud_region itg"} <= set(
        read_losses(tmp_path / "regionblip" / "metrics.jsonl"))
    assert (tmp_path / "regionblip" / "loss_curve.png").is_file()
    assert RegionBLIP.from_pretrained(final).config.qformer_text


def test_itc_and_itg_belong_to_a_qformer_stage():
    from training.trainer_config import TrainConfigError, parse_train_config
    stage = {"name": "v", "kind": "vision", "itc": True, "steps": 1, "tasks": [{"modality": "image_patches"}]}
    with pytest.raises(TrainConfigError, match="itc and itg are Q-Former losses"):
        parse_train_config({"output_dir": "out", "stages": [stage]})
