"""tools/memory_plan.py: the KV cache it plans is the one runtime/device_kv.py allocates, and bad arguments are one
line."""
import dataclasses
import json

import numpy as np
import pytest

from runtime.device_kv import DeviceKVCache
from runtime.device_memory import NumpyMemory
from tools.memory_plan import CallSize, kv_cache_bytes, main
from training.config import RegionBLIPConfig


def test_release_kv_cache_at_32_regions_is_the_hand_computed_size():
    config = RegionBLIPConfig.preset("blip2-opt-2.7b")
    # 2 buffers x 32 rows x 32 layers x (K, V) x 2560 wide x (32 queries + 20 tokens) x 2 bytes
    assert kv_cache_bytes(config, CallSize(32, 20, 1, 2)) == 2 * 32 * 32 * 2 * 2560 * 52 * 2


def test_planned_kv_cache_equals_what_the_device_cache_allocates():
    config = RegionBLIPConfig.preset("tiny")
    text, call = config.text_config(), CallSize(regions=3, max_new_tokens=7, beams=2, kv_bytes_per_value=4)
    heads = text.num_attention_heads
    cache = DeviceKVCache(NumpyMemory(runner=None, graphs={}), count=2 * text.num_hidden_layers, rows=6, heads=heads,
                          head_dim=text.hidden_size // heads, capacity=config.num_query_tokens + 7, dtype=np.float32)
    allocated = sum(array.capacity * array.dtype.itemsize for array in cache.front + cache.back)
    assert kv_cache_bytes(config, call) == allocated


def test_text_prompts_add_their_longest_prompts_positions_as_the_engine_sizes_the_cache(tiny_bundle):
    from runtime.bundle import load_bundle
    from runtime.graph_engine import GraphEngine
    from runtime.onnx_runner import OnnxRunner
    from training.checkpoint import CONFIG_NAME

    bundle = load_bundle(tiny_bundle)
    config = RegionBLIPConfig.load(bundle.checkpoint() / CONFIG_NAME)
    engine = GraphEngine(bundle, OnnxRunner(bundle), device_kv=True)
    settings = dataclasses.replace(bundle.manifest.generation, max_new_tokens=7)
    prompt = np.zeros((3, config.num_query_tokens, config.text_config().word_embed_proj_dim), np.float32)
    step = engine.language_model("image_region", prompt, settings, text_length=1 + 5)  # BOS + a 5-token prompt
    text = config.text_config()
    cache = DeviceKVCache(NumpyMemory(runner=None, graphs={}), count=2 * text.num_hidden_layers, rows=3,
                          heads=text.num_attention_heads, head_dim=text.hidden_size // text.num_attention_heads,
                          capacity=step.max_length, dtype=np.float32)
    allocated = sum(array.capacity * array.dtype.itemsize for array in cache.front + cache.back)
    assert kv_cache_bytes(config, CallSize(3, 7, 1, 4, prompt_tokens=5)) == allocated


def test_totals_add_the_measured_weights(capsys):
    assert main(["--weights-gib", "fp16=8.5", "int4=4.4"]) == 0
    plan = json.loads(capsys.readouterr().out)
    working = plan["kv_cache_gib"] + plan["peak_activations_gib"]
    assert plan["variants"]["fp16"]["total_gib"] == pytest.approx(8.5 + working)
    assert plan["variants"]["int4"]["total_gib"] == pytest.approx(4.4 + working)


@pytest.mark.parametrize("argv, says", [(["--regions", "0"], "--regions is 0"),
                                        (["--weights-gib", "fp16"], "give VARIANT=GIB"),
                                        (["--preset", "huge"], "unknown preset"),
                                        (["--prompt-tokens", "33"], "--prompt-tokens is 33: a prompt has 0 to 32")])
def test_bad_arguments_are_one_line(capsys, argv, says):
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert says in error and error.count("\n") == 1
