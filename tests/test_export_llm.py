"""The export LLM graph's module computes what transformers' OPT computes, with and without LoRA."""
import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from transformers import OPTConfig, OPTForCausalLM

from export.llm import ExportableOPT, top_tokens
from training.lora import activate_adapter

ADAPTERS = ["image_region", "pointcloud_region"]
# peft warns when a second adapter is injected: several per model is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config`")


def tiny_opt(**overrides) -> OPTForCausalLM:
    torch.manual_seed(0)
    values = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, ffn_dim=48, num_attention_heads=4,
                  max_position_embeddings=64, word_embed_proj_dim=32)
    values.update(overrides)
    model = OPTForCausalLM(OPTConfig(**values)).eval()
    for name in ADAPTERS:
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=1, target_modules=["q_proj", "v_proj"]), model,
                                adapter_name=name)
    with torch.no_grad():  # trained adapters: B is zero only at init
        for parameter_name, parameter in model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.normal_(std=0.5)
    return model


def hf_last_logits(model, adapter, prefix, ids):
    activate_adapter(model, adapter)
    embeds = torch.cat([prefix, model.get_input_embeddings()(ids)], dim=1)
    return model(inputs_embeds=embeds).logits[:, -1]


def export_steps(module, prefix, ids, adapter_ids=None):
    """Prefill on prefix + ids[:, :1], then decode the remaining ids one at a time; last logits."""
    logits, past = module(prefix, ids[:, :1], module.empty_past(len(ids)), adapter_ids)
    for t in range(1, ids.shape[1]):
        logits, past = module(prefix[:, :0], ids[:, t:t + 1], past, adapter_ids)
    return logits


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(3)
    return torch.randn(3, 5, 32, generator=generator), torch.randint(3, 50, (3, 4), generator=generator)


@pytest.mark.parametrize("variant", [{}, {"do_layer_norm_before": False},
                                     {"word_embed_proj_dim": 16, "hidden_size": 32}])
@torch.no_grad()
def test_plain_model_with_kv_cache_equals_transformers(variant, inputs):
    model = tiny_opt(**variant)
    prefix, ids = inputs
    prefix = prefix[..., : model.config.word_embed_proj_dim]
    expected = hf_last_logits(model, None, prefix, ids)
    torch.testing.assert_close(export_steps(ExportableOPT(model, []), prefix, ids), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_one_adapter_is_merged_into_the_weights(inputs):
    model = tiny_opt()
    prefix, ids = inputs
    expected = hf_last_logits(model, "pointcloud_region", prefix, ids)
    assert not torch.allclose(expected, hf_last_logits(model, None, prefix, ids), atol=1e-3)
    merged = ExportableOPT(model, ["pointcloud_region"])
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(export_steps(merged, prefix, ids), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_stacked_adapters_pick_each_rows_adapter(inputs):
    model = tiny_opt()
    prefix, ids = inputs
    stacked = ExportableOPT(model, ADAPTERS)
    adapter_ids = torch.tensor([1, 2, 0])  # pointcloud_region, none (image), image_region
    expected = torch.cat([hf_last_logits(model, adapter, prefix[i:i + 1], ids[i:i + 1])
                          for i, adapter in enumerate(["pointcloud_region", None, "image_region"])])
    torch.testing.assert_close(export_steps(stacked, prefix, ids, adapter_ids), expected, atol=1e-5, rtol=1e-5)


def test_an_adapter_the_model_lacks_is_named():
    with pytest.raises(ValueError, match="'pointcloud'"):
        ExportableOPT(tiny_opt(), ["image_region", "pointcloud"])


def test_top_tokens_rank_the_biased_log_softmax_and_return_its_unbiased_values():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [2.0, 0.0, 1.0, 3.0]])
    bias = torch.tensor([0.0, -torch.inf, 0.0, 0.0])  # token 1 forbidden
    log_probs, ids = top_tokens(logits, bias, k=2)
    assert ids.tolist() == [[3, 2], [3, 0]]
    torch.testing.assert_close(log_probs, logits.log_softmax(-1).gather(-1, ids))


def test_top_tokens_of_a_vocabulary_smaller_than_k_rank_all_of_it():
    log_probs, ids = top_tokens(torch.tensor([[1.0, 2.0, 0.0]]), torch.zeros(3), k=16)
    assert ids.tolist() == [[1, 0, 2]] and log_probs.shape == (1, 3)


# Rows padded to one length (text prompts of different lengths): export/llm.py's padding input

def padded(ids: torch.Tensor, pads: list[int], pad_id: int = 1) -> torch.Tensor:
    """Row r of ids with its first pads[r] tokens replaced by pads: a shorter text, left-padded."""
    ids = ids.clone()
    for row, count in enumerate(pads):
        ids[row, :count] = pad_id
    return ids


@torch.no_grad()
def test_padding_masks_keys_and_counts_positions_as_transformers_attention_mask(inputs):
    model = tiny_opt()
    activate_adapter(model, None)
    prefix, ids = inputs  # (3, 5, 32) soft prompts, (3, 4) texts
    pads = [0, 1, 3]
    ids = padded(ids, pads)
    mask = torch.ones(3, 5 + 4, dtype=torch.long)
    for row, count in enumerate(pads):
        mask[row, 5:5 + count] = 0
    embeds = torch.cat([prefix, model.get_input_embeddings()(ids)], dim=1)
    expected = model(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
    module = ExportableOPT(model, [])
    padding = torch.tensor([[5, 5 + count] for count in pads])
    logits, past = module(prefix, ids, module.empty_past(3), padding=padding)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # a decode step after it: the padded keys stay masked, the position goes on from the row's own count
    token = torch.tensor([[7], [8], [9]])
    expected = model(inputs_embeds=torch.cat([embeds, model.get_input_embeddings()(token)], dim=1),
                     attention_mask=torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)).logits[:, -1]
    logits, _ = module(prefix[:, :0], token, past, padding=padding)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_a_padded_row_gives_what_it_gives_alone(inputs):
    module = ExportableOPT(tiny_opt(), [])
    prefix, ids = inputs
    batch = padded(ids, [0, 2, 0])
    logits, _ = module(prefix, batch, module.empty_past(3), padding=torch.tensor([[5, 5], [5, 7], [5, 5]]))
    alone, _ = module(prefix[1:2], ids[1:2, 2:], module.empty_past(1))
    torch.testing.assert_close(logits[1:2], alone, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_an_empty_padding_computes_exactly_what_no_padding_does(inputs):
    module = ExportableOPT(tiny_opt(), ADAPTERS)
    prefix, ids = inputs
    adapter_ids = torch.tensor([1, 2, 0])
    expected, past = module(prefix, ids, module.empty_past(3), adapter_ids)
    logits, present = module(prefix, ids, module.empty_past(3), adapter_ids, padding=torch.full((3, 2), 5))
    assert torch.equal(logits, expected) and all(torch.equal(a, b) for a, b in zip(present, past))
