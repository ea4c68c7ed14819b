"""Checkpoints: our directory format and the official RegionBLIP (LAVIS) state dict reproduce outputs exactly."""

import re

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, Blip2Config, Blip2ForConditionalGeneration, PreTrainedTokenizerFast

from contract.modalities import MODALITIES
from training.config import RegionBLIPConfig
from training.modeling_regionblip import RegionBLIP

GEN = dict(num_beams=2, max_new_tokens=6, min_new_tokens=2)
INPUTS = {
    "image": dict(pixel_values=torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))),
    "image_region": dict(pixel_values=torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2)),
                         boxes=torch.tensor([[0.1, 0.2, 0.6, 0.7], [0.3, 0.3, 0.9, 1.0]])),
    "pointcloud": dict(points=torch.randn(2, 48, 3, generator=torch.Generator().manual_seed(3))),
    "pointcloud_region": dict(points=torch.randn(1, 48, 3, generator=torch.Generator().manual_seed(4)),
                              boxes=torch.randn(2, 8, 3, generator=torch.Generator().manual_seed(5))),
}
CAPTIONS = torch.randint(3, 100, (2, 5), generator=torch.Generator().manual_seed(6))


def trained_model(model=None):
    """A tiny model whose adapters and BatchNorm statistics are all non-trivial."""
    torch.manual_seed(0)
    model = model or RegionBLIP(RegionBLIPConfig.preset("tiny"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0, 0.1)
        for name, buffer in model.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
        for layer in model.vision_model.encoder.layers:  # EVA's qkv has no key bias
            layer.self_attn.qkv.bias[32:64] = 0
    return model.eval()


def outputs(model):
    with torch.no_grad():
        return {m: (model(m, CAPTIONS, torch.ones_like(CAPTIONS), **INPUTS[m]).logits,
                    model.generate(m, **INPUTS[m], **GEN).token_ids) for m in MODALITIES}


def assert_same_outputs(expected, actual):
    for modality in MODALITIES:
        assert torch.equal(expected[modality][0], actual[modality][0]), modality
        assert torch.equal(expected[modality][1], actual[modality][1]), modality


def test_save_and_from_pretrained_reproduce_outputs_and_keep_the_tokenizer(tmp_path):
    model = trained_model()
    vocab = {"<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "red": 5, "cube": 6}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                                        pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    loaded = RegionBLIP.from_pretrained(tmp_path)
    assert loaded.config == model.config
    assert_same_outputs(outputs(model), outputs(loaded))
    assert AutoTokenizer.from_pretrained(tmp_path).convert_tokens_to_ids("cube") == 6


def test_from_pretrained_rejects_weights_of_another_config(tmp_path):
    trained_model().save_pretrained(tmp_path)
    config = RegionBLIPConfig.load(tmp_path / "config.json")
    config.point_depth = 3
    config.save(tmp_path / "config.json")
    with pytest.raises(ValueError, match="does not match its config.json"):
        RegionBLIP.from_pretrained(tmp_path)


LAVIS_MODALITY = {"image": "img", "image_region": "img_region", "pointcloud": "pc", "pointcloud_region": "pc_region"}
# Our name -> the release's name, written out independently of the converter under test.
TO_LAVIS = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"visual_encoder.blocks.\1.norm\2."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.projection\.", r"visual_encoder.blocks.\1.attn.proj."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.self_attn\.qkv\.", r"visual_encoder.blocks.\1.attn.qkv."),
    (r"^vision_model\.encoder\.layers\.(\d+)\.mlp\.", r"visual_encoder.blocks.\1.mlp."),
    (r"^vision_model\.post_layernorm\.", "ln_vision."),
    (r"^qformer\.layernorm\.", "Qformer.bert.embeddings.LayerNorm."),
    (r"^qformer_pc\.layernorm\.", "Qformer_pc.bert.embeddings.LayerNorm."),
    (r"^qformer\.", "Qformer.bert."),
    (r"^qformer_pc\.", "Qformer_pc.bert."),
    (r"attention\.attention\.", "attention.self."),
    (r"^query_tokens\.(\w+)$", lambda m: f"query_tokens_{LAVIS_MODALITY[m[1]]}"),
    (r"^language_projection\.(\w+?)\.", lambda m: f"opt_proj_{LAVIS_MODALITY[m[1]]}."),
    (r"^region_position_embedding\.image_region\.", "img_region_posembed."),
    (r"^region_position_embedding\.pointcloud_region\.", "pc_region_posembed."),
    (r"^box_regression\.image_region\.", "reg_img_region."),
    (r"^box_regression\.pointcloud_region\.", "reg_pc_region."),
    (r"^point_adapter\.", "pc_adapter."),
    (r"^point_encoder\.blocks\.", "point_encoder.blocks.blocks."),
    (r"^language_model\.", "opt_model."),
    (r"\.base_layer\.", "."),
    (r"\.lora_([AB])\.(\w+)\.weight$", lambda m: f".lora_{m[1]}_{LAVIS_MODALITY[m[2]]}"),
]


def lavis_name(name):
    for pattern, replacement in TO_LAVIS:
        name = re.sub(pattern, replacement, name)
    return name


def released_state_dict(model):
    state = {}
    for name, tensor in model.state_dict().items():
        name = lavis_name(name)
        if name.endswith("attn.qkv.bias"):  # EVA stores q and v biases apart
            q, _, v = tensor.chunk(3)
            state[name.replace("qkv.bias", "q_bias")], state[name.replace("qkv.bias", "v_bias")] = q, v
        else:
            state[name] = tensor.clone()
    # what the release has and this model does not: ITC/ITM heads, Q-Former text side, the image LoRA (B = 0)
    state |= {"stage1_proj_text.weight": torch.zeros(256, 32), "temp": torch.tensor(0.07),
              "img_itm_head.weight": torch.zeros(2, 32), "Qformer.cls.predictions.bias": torch.zeros(30522),
              "Qformer.bert.embeddings.word_embeddings.weight": torch.zeros(30522, 32),
              "Qformer.bert.encoder.layer.0.intermediate.dense.weight": torch.zeros(64, 32),
              "Qformer.bert.encoder.layer.0.attention.self.query.lora_A_img": torch.ones(8, 32),
              "Qformer.bert.encoder.layer.0.attention.self.query.lora_B_img": torch.zeros(32, 8),
              "opt_model.model.decoder.layers.0.self_attn.q_proj.lora_B_img": torch.zeros(32, 8)}
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_from_lavis_reproduces_the_released_model(tmp_path, suffix):
    model = trained_model()
    path = tmp_path / f"regionblip{suffix}"
    state = released_state_dict(model)
    if suffix == ".pth":
        torch.save({"model": state, "epoch": 29}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items() if k != "opt_model.lm_head.weight"}, path)
    loaded = RegionBLIP.from_lavis(path, config=RegionBLIPConfig.preset("tiny"))
    assert_same_outputs(outputs(model), outputs(loaded))


@pytest.mark.parametrize("change,message", [
    (lambda s: s.update({"Qformer.bert.encoder.layer.0.attention.self.query.lora_B_img": torch.ones(32, 8)}),
     "image modality must be plain BLIP-2"),
    (lambda s: s.update({"itg_head.weight": torch.zeros(2, 2)}), "cannot be mapped"),
    (lambda s: s.pop("ln_vision.weight"), "lacks 1 weights"),
])
def test_from_lavis_rejects_what_it_cannot_map(tmp_path, change, message):
    state = released_state_dict(trained_model())
    change(state)
    torch.save(state, tmp_path / "regionblip.pth")
    with pytest.raises(ValueError, match=message):
        RegionBLIP.from_lavis(tmp_path / "regionblip.pth", config=RegionBLIPConfig.preset("tiny"))


def test_a_released_checkpoint_of_trained_weights_loads_over_blip2_and_point_bert(tmp_path):
    tiny = RegionBLIPConfig.preset("tiny")
    blip2 = Blip2ForConditionalGeneration(Blip2Config(
        vision_config=tiny.vision, qformer_config=tiny.qformer, text_config=dict(tiny.text, model_type="opt"),
        num_query_tokens=tiny.num_query_tokens, image_token_index=100))
    blip2.save_pretrained(tmp_path / "blip2")
    regionblip_fields = {k: v for k, v in tiny.to_dict().items() if k not in ("vision", "qformer", "text")}
    model = trained_model(RegionBLIP.from_blip2(tmp_path / "blip2", **regionblip_fields))
    with torch.no_grad():
        model.qformer_pc.layernorm.weight.add_(0.5)  # trained, so it must come from the released file
    # LAVIS keeps trained weights and buffers; Point-BERT's own checkpoint nests them under transformer_q.
    kept = {lavis_name(n) for n in model.trainable_parameters("regionblip")}
    kept |= {lavis_name(n) for n, _ in model.named_buffers()}
    torch.save({"model": {k: v for k, v in released_state_dict(model).items() if k in kept}},
               tmp_path / "regionblip.pth")
    point_bert = {"module.transformer_q." + re.sub(r"^blocks\.", "blocks.blocks.", k): v
                  for k, v in model.point_encoder.state_dict().items()}
    point_bert["module.transformer_k.cls_token"] = torch.zeros(1, 1, tiny.point_trans_dim)
    torch.save({"base_model": point_bert}, tmp_path / "point_bert.pt")

    loaded = RegionBLIP.from_lavis(tmp_path / "regionblip.pth", blip2=tmp_path / "blip2",
                                   point_bert=tmp_path / "point_bert.pt", **regionblip_fields)
    assert_same_outputs(outputs(model), outputs(loaded))
    with pytest.raises(ValueError, match="point_bert="):
        RegionBLIP.from_lavis(tmp_path / "regionblip.pth", blip2=tmp_path / "blip2", **regionblip_fields)
