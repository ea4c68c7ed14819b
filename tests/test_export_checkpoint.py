"""export/checkpoint.py: a checkpoint read graph by graph, only the prefixed weights loaded."""
import json
import shutil

import pytest
import torch

from export.checkpoint import CheckpointWeights
from export.graphs import graph_names, weight_prefixes
from training.modeling_regionblip import RegionBLIP


def test_only_the_prefixed_weights_are_loaded_and_equal_the_checkpoints(tiny_checkpoint):
    full = RegionBLIP.from_pretrained(tiny_checkpoint).state_dict()
    model = CheckpointWeights(tiny_checkpoint).model(("vision_model.", "query_tokens.image"))
    for key, tensor in model.named_parameters():
        if key.startswith(("vision_model.", "query_tokens.image")):
            assert not tensor.is_meta and torch.equal(tensor, full[key]), key
        else:
            assert tensor.is_meta, key


def test_the_llm_keeps_its_output_layer_tied_to_the_token_embedding(tiny_checkpoint):
    llm = CheckpointWeights(tiny_checkpoint).model(("language_model.",)).language_model
    assert llm.lm_head.weight is llm.model.decoder.embed_tokens.weight
    assert not llm.lm_head.weight.is_meta


def test_every_graph_of_a_bundle_has_weight_prefixes_that_exist(tiny_checkpoint):
    source = CheckpointWeights(tiny_checkpoint)
    keys = RegionBLIP.from_pretrained(tiny_checkpoint).state_dict().keys()
    for name in graph_names(["image", "image_region", "pointcloud", "pointcloud_region"]):
        for prefix in weight_prefixes(name, source.config):
            assert any(key.startswith(prefix) for key in keys), (name, prefix)
    with pytest.raises(ValueError, match="unknown graph"):
        weight_prefixes("qformer_sonar", source.config)


def test_a_config_that_does_not_match_the_weights_is_refused_on_opening(tiny_checkpoint, tmp_path):
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    config = json.loads((copy / "config.json").read_text())
    config["vision"]["hidden_size"] *= 2
    config["qformer"]["encoder_hidden_size"] = config["vision"]["hidden_size"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match its config.json.*shapes"):
        CheckpointWeights(copy)
