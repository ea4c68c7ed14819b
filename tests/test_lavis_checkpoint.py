"""The release's LAVIS state dicts, with exactly upstream's names and shapes at tiny size, load through from_lavis:
RegionBLIP_opt's as its runner saves it (trained parameters plus buffers), and a plain BLIP-2 OPT's (blip2_opt.py)."""

import dataclasses
import logging
import re

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, Blip2Config, Blip2ForConditionalGeneration

from contract.modalities import MODALITIES
from tests.test_model_checkpoint import LAVIS_MODALITY, TO_LAVIS, assert_same_outputs, outputs, trained_model
from training.checkpoint import load_bert_text_weights
from training.checkpoint_lavis import lavis_to_regionblip
from training.config import RegionBLIPConfig
from training.modeling_regionblip import RegionBLIP

TINY = RegionBLIPConfig.preset("tiny")
TEXT_FIELDS = dict(qformer_text=True, qformer_text_vocab_size=64, qformer_text_bos_token_id=63, qformer_embed_dim=16)
RANK, SUFFIXES = 8, ("img", "img_region", "pc", "pc_region")  # the release's LoRA: every modality everywhere
IDS = torch.randint(3, 60, (2, 5), generator=torch.Generator().manual_seed(7))


# ---- upstream's architecture, written from RegionBLIP_opt.py / Qformer.py / eva_vit.py, not from our model --------

def lora(prefix, fan_in, fan_out):
    return {f"{prefix}.lora_{ab}_{m}": (RANK, fan_in) if ab == "A" else (fan_out, RANK)
            for m in SUFFIXES for ab in "AB"}


def linear(prefix, fan_in, fan_out, bias=True):
    return {f"{prefix}.weight": (fan_out, fan_in), **({f"{prefix}.bias": (fan_out,)} if bias else {})}


def norm(prefix, width):
    return {f"{prefix}.weight": (width,), f"{prefix}.bias": (width,)}


def upstream_vit(c):
    v = c.vision_config()
    w, patches = v.hidden_size, (v.image_size // v.patch_size) ** 2
    shapes = {"visual_encoder.cls_token": (1, 1, w), "visual_encoder.pos_embed": (1, patches + 1, w),
              "visual_encoder.patch_embed.proj.weight": (w, 3, v.patch_size, v.patch_size),
              "visual_encoder.patch_embed.proj.bias": (w,), **norm("ln_vision", w)}
    for i in range(v.num_hidden_layers):
        b = f"visual_encoder.blocks.{i}"
        shapes |= {**norm(f"{b}.norm1", w), f"{b}.attn.q_bias": (w,), f"{b}.attn.v_bias": (w,),
                   **linear(f"{b}.attn.qkv", w, 3 * w, bias=False), **linear(f"{b}.attn.proj", w, w),
                   **norm(f"{b}.norm2", w), **linear(f"{b}.mlp.fc1", w, v.intermediate_size),
                   **linear(f"{b}.mlp.fc2", v.intermediate_size, w)}
    return shapes


def upstream_qformer(prefix, c, *, with_lora, text_side, vocab):
    q = c.qformer_config()
    h, inner, enc = q.hidden_size, q.intermediate_size, q.encoder_hidden_size
    e = f"{prefix}.bert.embeddings"
    shapes = norm(f"{e}.LayerNorm", h) | {f"{e}.position_ids": (1, q.max_position_embeddings)}
    if text_side:
        shapes |= {f"{e}.word_embeddings.weight": (vocab, h),
                   f"{e}.position_embeddings.weight": (q.max_position_embeddings, h)}
    for i in range(q.num_hidden_layers):
        layer = f"{prefix}.bert.encoder.layer.{i}"
        for block in ["attention"] + (["crossattention"] if i % q.cross_attention_frequency == 0 else []):
            kv = enc if block == "crossattention" else h
            a = f"{layer}.{block}"
            shapes |= linear(f"{a}.self.query", h, h) | linear(f"{a}.self.key", kv, h)
            shapes |= linear(f"{a}.self.value", kv, h)
            shapes |= linear(f"{a}.output.dense", h, h) | norm(f"{a}.output.LayerNorm", h)
            if with_lora:
                shapes |= lora(f"{a}.self.query", h, h) | lora(f"{a}.self.value", kv, h)
        for ffn in ["_query"] + ([""] if text_side else []):
            shapes |= linear(f"{layer}.intermediate{ffn}.dense", h, inner) | linear(f"{layer}.output{ffn}.dense",
                                                                                     inner, h)
            shapes |= norm(f"{layer}.output{ffn}.LayerNorm", h)
    if text_side:
        p = f"{prefix}.cls.predictions"
        shapes |= {f"{p}.bias": (vocab,), f"{p}.decoder.weight": (vocab, h), f"{p}.decoder.bias": (vocab,)}
        shapes |= linear(f"{p}.transform.dense", h, h) | norm(f"{p}.transform.LayerNorm", h)
    return shapes


def upstream_regionblip(c, model):
    """RegionBLIP_opt's state dict shapes. Point-BERT (ULIP's names) and OPT (transformers') are named as ours."""
    h, d, embed, box_h = c.qformer_config().hidden_size, c.text_config().hidden_size, c.qformer_embed_dim, \
        c.region_embed_hidden
    shapes = upstream_vit(c) | upstream_qformer("Qformer", c, with_lora=True, text_side=True,
                                                vocab=c.qformer_text_vocab_size)
    shapes |= upstream_qformer("Qformer_pc", c, with_lora=True, text_side=True, vocab=c.qformer_text_vocab_size)
    for m in SUFFIXES:
        shapes |= {f"query_tokens_{m}": (1, c.num_query_tokens, h)} | linear(f"opt_proj_{m}", h, d)
        shapes |= linear(f"stage1_proj_{m}", h, embed)
    shapes |= linear("stage1_proj_text", h, embed) | linear("img_itm_head", h, 2) | {"temp": ()}
    shapes |= linear("img_region_posembed.0", 4, box_h) | linear("img_region_posembed.2", box_h, h)
    shapes |= linear("pc_region_posembed.0", 24, box_h) | linear("pc_region_posembed.2", box_h, h)
    shapes |= linear("reg_img_region", h, 4) | linear("reg_pc_region", h, 24)
    shapes |= linear("pc_adapter", c.point_trans_dim, c.qformer_config().encoder_hidden_size)
    shapes |= {"point_encoder." + re.sub(r"^blocks\.", "blocks.blocks.", k): tuple(v.shape)
               for k, v in model.point_encoder.state_dict().items()}
    for key, tensor in model.language_model.state_dict().items():
        if ".lora_" not in key:
            shapes["opt_model." + key.replace(".base_layer.", ".")] = tuple(tensor.shape)
    for i in range(c.text_config().num_hidden_layers):
        for proj in ("q_proj", "v_proj"):
            shapes |= lora(f"opt_model.model.decoder.layers.{i}.self_attn.{proj}", d, d)
    return shapes


def upstream_trainable(name: str) -> bool:
    """freeze_vit, freeze_qformer (its LoRA trains), freeze_blip2_pretrain (the image parts), freeze_point_encoder."""
    if name.startswith("Qformer.") or name.startswith("opt_model."):
        return ".lora_" in name and not re.search(r"lora_[AB]_img$", name)
    return not name.startswith(("visual_encoder.", "ln_vision.", "point_encoder.", "query_tokens_img",
                                "opt_proj_img.")) or name.startswith(("query_tokens_img_region", "opt_proj_img_region"))


# ---- the dicts, filled from a reference model of ours -------------------------------------------------------------

TEXT_TO_LAVIS = [
    (r"^qformer_text\.text\.qformer(_pc)?\.embeddings\.", r"Qformer\1.bert.embeddings."),
    (r"^qformer_text\.text\.qformer(_pc)?\.predictions\.", r"Qformer\1.cls.predictions."),
    (r"^qformer_text\.vision_projection\.(\w+?)\.", lambda m: f"stage1_proj_{LAVIS_MODALITY[m[1]]}."),
    (r"^qformer_text\.text_projection\.", "stage1_proj_text."),
    (r"^qformer_text\.temp$", "temp"),
]


def to_lavis(name, plain=False):
    rules = ([(r"^query_tokens\.image$", "query_tokens"), (r"^language_projection\.image\.", "opt_proj.")]
             if plain else []) + TEXT_TO_LAVIS + TO_LAVIS
    for pattern, replacement in rules:
        name = re.sub(pattern, replacement, name)
    return name


def lavis_state(model, shapes, plain=False):
    state = {}
    for name, tensor in model.state_dict().items():
        if plain and not name.startswith(("vision_model.", "qformer.", "query_tokens.image", "language_projection"
                                          ".image.", "language_model.")) or ".lora_" in name and plain:
            continue
        name = to_lavis(name, plain)
        if name.endswith("attn.qkv.bias"):  # EVA stores q and v biases apart
            q, _, v = tensor.chunk(3)
            state[name.replace("qkv.bias", "q_bias")], state[name.replace("qkv.bias", "v_bias")] = q, v
        elif name in shapes:
            state[name] = tensor.clone()
    generator = torch.Generator().manual_seed(3)
    for name, shape in shapes.items():  # what the release has beyond this model: its tensors are of no effect
        if name in state:
            continue
        if name.endswith("position_ids"):
            state[name] = torch.arange(shape[1])[None]
        elif name.endswith("cls.predictions.decoder.weight"):
            state[name] = state[name.replace("cls.predictions.decoder", "bert.embeddings.word_embeddings")]
        elif name.endswith("cls.predictions.decoder.bias"):
            state[name] = state[name.replace("decoder.bias", "bias")]
        else:  # unused LoRA (an image one stays 0, as released) and the ITM head
            state[name] = torch.zeros(shape) if name.endswith("lora_B_img") else torch.randn(shape, generator=generator)
    return state


def write_sources(tmp_path, c):
    """A tiny transformers BLIP-2 OPT directory and a tiny BERT directory of bert-base-uncased's format."""
    blip2 = Blip2ForConditionalGeneration(Blip2Config(
        vision_config=c.vision, qformer_config=c.qformer, text_config=dict(c.text, model_type="opt"),
        num_query_tokens=c.num_query_tokens, image_token_index=100))
    blip2.save_pretrained(tmp_path / "blip2")
    q = c.qformer_config()
    BertForMaskedLM(BertConfig(vocab_size=c.qformer_text_vocab_size, hidden_size=q.hidden_size,
                               num_hidden_layers=q.num_hidden_layers, num_attention_heads=q.num_attention_heads,
                               intermediate_size=q.intermediate_size)).save_pretrained(tmp_path / "bert")
    return {k: v for k, v in c.to_dict().items() if k not in ("vision", "qformer", "text")}


def text_losses(model):
    losses = []
    with torch.no_grad():
        for m in MODALITIES:
            kwargs = dict(pixel_values=torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))) \
                if m.startswith("image") else dict(points=torch.randn(2, 48, 3, generator=torch.Generator()
                                                                      .manual_seed(2)))
            if m.endswith("region"):
                kwargs["boxes"] = torch.tensor([[0.1, 0.2, 0.6, 0.7]] * 2) if m == "image_region" else \
                    torch.randn(2, 24, generator=torch.Generator().manual_seed(3))
            out = model(m, IDS, torch.ones_like(IDS), **kwargs, qformer_input_ids=IDS,
                        qformer_attention_mask=torch.ones_like(IDS), itc=True, itg=True)
            losses += [out.itc_loss, out.itg_loss]
    return torch.stack(losses)


def test_a_released_state_dict_of_upstream_names_loads_over_blip2_point_bert_and_bert(tmp_path):
    config = dataclasses.replace(TINY, **TEXT_FIELDS)
    fields = write_sources(tmp_path, config)
    model = trained_model(RegionBLIP.from_blip2(tmp_path / "blip2", bert=tmp_path / "bert", **fields))
    with torch.no_grad():  # trained upstream, so they must come from the released file
        model.qformer_pc.layernorm.weight.add_(0.5)
        model.qformer_text.text["qformer_pc"].embeddings.word_embeddings.weight.add_(0.5)
        model.qformer_text.temp.fill_(0.05)
    shapes = upstream_regionblip(config, model)
    state = lavis_state(model, shapes)
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes  # exactly upstream's names and shapes
    buffers = {re.sub(r"\.(running_mean|running_var|num_batches_tracked)$", "", k) for k in shapes
               if k.endswith(("running_mean", "running_var", "num_batches_tracked", "position_ids"))}
    saved = {k: v for k, v in state.items() if upstream_trainable(k) or any(k.startswith(b) for b in buffers)}
    torch.save({"model": saved, "optimizer": {"state": {}, "param_groups": []}, "epoch": 29}, tmp_path / "ckpt.pth")
    point_bert = {"module.transformer_q." + re.sub(r"^blocks\.", "blocks.blocks.", k): v
                  for k, v in model.point_encoder.state_dict().items()}
    torch.save({"base_model": point_bert}, tmp_path / "point_bert.pt")

    loaded = RegionBLIP.from_lavis(tmp_path / "ckpt.pth", blip2=tmp_path / "blip2",
                                   point_bert=tmp_path / "point_bert.pt", bert=tmp_path / "bert", **fields)
    assert_same_outputs(outputs(model), outputs(loaded))
    torch.testing.assert_close(text_losses(loaded), text_losses(model), rtol=0, atol=0)
    _, skipped = lavis_to_regionblip(saved, loaded)
    unused_lora = {k for k in saved if re.search(r"^Qformer\..*lora_[AB]_pc(_region)?$|^Qformer_pc\..*lora_[AB]_img"
                                                 r"(_region)?$|^opt_model\..*lora_[AB]_img$", k)}
    never = {k for k in saved if k.startswith("img_itm_head.") or k.endswith(("position_ids", "decoder.weight",
                                                                               "decoder.bias"))}
    assert unused_lora and set(skipped) == unused_lora | never


def test_a_model_without_the_text_side_skips_the_released_one_and_says_so(tmp_path, caplog):
    model = trained_model()
    with_text = dataclasses.replace(TINY, **TEXT_FIELDS)
    state = lavis_state(model, upstream_regionblip(with_text, RegionBLIP(with_text)))
    torch.save({"model": state}, tmp_path / "full.pth")
    with caplog.at_level(logging.INFO, logger="training.checkpoint_lavis"):
        loaded = RegionBLIP.from_lavis(tmp_path / "full.pth", config=TINY)
    assert_same_outputs(outputs(model), outputs(loaded))
    _, skipped = lavis_to_regionblip(state, loaded)
    assert {"temp", "stage1_proj_text.weight", "Qformer_pc.cls.predictions.bias",
            "Qformer.bert.embeddings.word_embeddings.weight",
            "Qformer_pc.bert.encoder.layer.1.intermediate.dense.weight"} <= set(skipped)
    assert "the Q-Former text side of ITC/ITG" in caplog.text


def test_a_plain_lavis_blip2_opt_state_dict_loads_as_the_image_modality(tmp_path):
    model = trained_model()
    shapes = {k: s for k, s in upstream_vit(TINY).items()}
    shapes |= upstream_qformer("Qformer", TINY, with_lora=False, text_side=False, vocab=None)
    shapes |= {"query_tokens": (1, TINY.num_query_tokens, 32), **linear("opt_proj", 32, 32)}
    shapes |= {"opt_model." + k.replace(".base_layer.", "."): tuple(v.shape)
               for k, v in model.language_model.state_dict().items() if ".lora_" not in k}
    state = lavis_state(model, shapes, plain=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes  # blip2_opt.py's names, text side removed
    torch.save({"model": state}, tmp_path / "blip2_opt.pth")

    loaded = RegionBLIP.from_lavis(tmp_path / "blip2_opt.pth", config=TINY)
    with torch.no_grad():
        expected = model("image", IDS, torch.ones_like(IDS), pixel_values=torch.ones(1, 3, 32, 32).expand(2, -1, -1,
                                                                                                      -1)).logits
        actual = loaded("image", IDS, torch.ones_like(IDS), pixel_values=torch.ones(1, 3, 32, 32).expand(2, -1, -1,
                                                                                                       -1)).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    _, skipped = lavis_to_regionblip(state, loaded)
    assert skipped == ["Qformer.bert.embeddings.position_ids"]
    image, point = loaded.qformer.state_dict(), loaded.qformer_pc.state_dict()  # the point Q-Former starts as a copy
    assert all(torch.equal(point[k], v) for k, v in image.items() if ".lora_" not in k)


def test_bert_gives_both_text_sides_and_dec_past_its_vocabulary_keeps_its_init(tmp_path):
    config = dataclasses.replace(TINY, **TEXT_FIELDS)
    q = config.qformer_config()
    sizes = dict(hidden_size=q.hidden_size, num_hidden_layers=q.num_hidden_layers,
                 num_attention_heads=q.num_attention_heads, intermediate_size=q.intermediate_size)
    bert = BertForMaskedLM(BertConfig(vocab_size=63, **sizes))  # bert-base-uncased's size, one short of [DEC]
    bert.save_pretrained(tmp_path / "bert")
    model = RegionBLIP(config)
    dec = model.qformer_text.text["qformer"].embeddings.word_embeddings.weight[63].clone()
    load_bert_text_weights(model, tmp_path / "bert")
    for name in ("qformer", "qformer_pc"):
        words = model.qformer_text.text[name].embeddings.word_embeddings.weight
        assert torch.equal(words[:63], bert.bert.embeddings.word_embeddings.weight)
        ffn = getattr(model, name).encoder.layer[1].output.dense.weight
        assert torch.equal(ffn, bert.bert.encoder.layer[1].output.dense.weight)
    assert torch.equal(model.qformer_text.text["qformer"].embeddings.word_embeddings.weight[63], dec)
    BertForMaskedLM(BertConfig(vocab_size=65, **sizes)).save_pretrained(tmp_path / "big")
    with pytest.raises(ValueError, match="more than this model's qformer_text_vocab_size 64"):
        load_bert_text_weights(model, tmp_path / "big")
