"""Decoding with the KV cache in device memory (runtime/device_kv.py, runtime/device_memory.py).

The cache logic is specified on every kind of memory there is here: the numpy stand-in, ONNX Runtime's
OrtValues with IO binding on CPU, and torch CUDA tensors where a GPU is visible (the `gpu` case). The
IO-bound decode runs the tiny bundle's real llm graph and must choose exactly what today's numpy feeds choose.
"""
import dataclasses

import numpy as np
import pytest

from runtime.bundle import load_bundle
from runtime.device_kv import DeviceKVCache, DeviceLanguageModelStep, KVCacheOverflow
from runtime.device_memory import NumpyMemory
from runtime.decoding import decode
from runtime.graph_engine import GraphEngine
from runtime.onnx_runner import OnnxRunner, OrtMemory
from tests.device_engines import KINDS, device_and_host

ROWS, HEADS, HEAD_DIM = 3, 2, 4
TOP_K = 16  # export/llm.py's TOP_K: the ranked tokens the graph returns per row


def _numpy():
    return NumpyMemory(runner=None, graphs={})


def _ort_cpu():
    import onnxruntime

    return OrtMemory({}, "cpu", onnxruntime.SessionOptions(), ["CPUExecutionProvider"])


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU is visible to torch")
    from runtime.tensorrt_runner import TorchCudaMemory

    return TorchCudaMemory({}, "cuda")


@pytest.fixture(params=[_numpy, _ort_cpu, pytest.param(_torch_cuda, marks=pytest.mark.gpu)],
                ids=["numpy", "onnxruntime-cpu", "torch-cuda"])
def memory(request):
    return request.param()


def write(memory, target, values: np.ndarray) -> None:
    """Put host `values` into device array `target`, as a graph writes its output there: a device-side copy."""
    memory.gather([memory.upload(values, target.dtype)], np.arange(len(values)), [target])


def values(length: int, start: int = 0) -> np.ndarray:
    """Distinct cache entries (ROWS, HEADS, length, HEAD_DIM), numbered from `start`."""
    return np.arange(start, start + ROWS * HEADS * length * HEAD_DIM, dtype=np.float32).reshape(
        ROWS, HEADS, length, HEAD_DIM)


def grow(memory, cache, new: np.ndarray) -> None:
    """One step of the llm graph on `cache`: the present is the past followed by `new`."""
    past = [memory.download(array) for array in cache.past()]
    for target, old in zip(cache.present(new.shape[2]), past):
        write(memory, target, np.concatenate([old, new], axis=2))
    cache.advance(new.shape[2])


def cache_of(memory, capacity=6, count=2):
    return DeviceKVCache(memory, count, ROWS, HEADS, HEAD_DIM, capacity, np.float32)


def test_a_step_writes_the_other_buffer_and_the_two_swap_without_allocating(memory):
    cache = cache_of(memory)
    buffers = {id(array.buffer) for array in cache.front + cache.back}
    front, back = [a.buffer for a in cache.front], [a.buffer for a in cache.back]
    grow(memory, cache, values(3))
    assert [a.buffer for a in cache.front] == back and [a.buffer for a in cache.back] == front
    grow(memory, cache, values(1, start=1000))
    assert [a.buffer for a in cache.front] == front
    assert {id(array.buffer) for array in cache.front + cache.back} == buffers


def test_the_past_is_every_step_s_entries_at_the_grown_length(memory):
    cache = cache_of(memory)
    steps = [values(3), values(1, start=1000), values(1, start=2000)]
    for new in steps:
        grow(memory, cache, new)
    expected = np.concatenate(steps, axis=2)
    assert cache.length == 5
    for array in cache.past():
        assert array.shape == (ROWS, HEADS, 5, HEAD_DIM)
        np.testing.assert_array_equal(memory.download(array), expected)


def test_a_beam_reorder_gathers_the_rows_on_the_device_and_sends_only_the_row_ids(memory):
    cache = cache_of(memory)
    grow(memory, cache, values(2))
    before = memory.transfers.to_device
    cache.reorder(np.array([2, 0, 0]))
    assert memory.transfers.to_device - before == 3 * 8  # the three int64 row ids
    for array in cache.past():
        np.testing.assert_array_equal(memory.download(array), values(2)[[2, 0, 0]])
    grow(memory, cache, values(1, start=1000))  # the reordered cache grows like any other
    np.testing.assert_array_equal(memory.download(cache.past()[0]),
                                  np.concatenate([values(2)[[2, 0, 0]], values(1, start=1000)], axis=2))


def test_growing_past_the_preallocated_length_is_refused_and_leaves_the_cache_as_it_was(memory):
    cache = cache_of(memory, capacity=4)
    grow(memory, cache, values(3))
    with pytest.raises(KVCacheOverflow, match="preallocated for 4 positions .* from 3 to 5: decode at most"):
        cache.present(2)
    assert cache.length == 3
    np.testing.assert_array_equal(memory.download(cache.past()[1]), values(3))


def test_a_reorder_must_keep_the_number_of_rows(memory):
    cache = cache_of(memory)
    with pytest.raises(ValueError, match="keeps the cache's 3 rows, but 2 were given"):
        cache.reorder(np.array([0, 1]))


def test_a_view_larger_than_its_buffer_is_refused(memory):
    with pytest.raises(ValueError, match="needs 12 elements, but its buffer holds 10"):
        memory.empty((0, 4), np.float32, capacity=10).view((3, 4))


def test_a_gather_cannot_write_the_buffer_it_reads(memory):
    array = memory.upload(values(1))
    with pytest.raises(ValueError, match="cannot write into the buffer it reads"):
        memory.gather([array], np.arange(ROWS), [array])


# Decoding the tiny bundle with the cache on the device

@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="module")
def runner(bundle):
    return OnnxRunner(bundle, threads=1)


@pytest.fixture(scope="module")
def region_inputs(bundle):
    rng = np.random.default_rng(0)
    size = bundle.manifest.preprocess.image_size
    corners = rng.uniform(0, 0.5, (5, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(0.1, 0.5, (5, 2))], axis=1).astype(np.float32)
    return rng.normal(size=(1, 3, size, size)).astype(np.float32), boxes, np.zeros(5, np.int64)


def describe(bundle, engine, region_inputs, **settings):
    chosen = dataclasses.replace(bundle.manifest.generation, **{"max_new_tokens": 8, "min_new_tokens": 0, **settings})
    frames, boxes, frame_index = region_inputs
    decoded, _ = engine.generate("image_region", frames, chosen, boxes, frame_index)
    return decoded


@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "3 beams"])
@pytest.mark.parametrize("kind", KINDS)
def test_decoding_with_the_cache_on_the_device_chooses_exactly_what_numpy_feeds_choose(bundle, runner, region_inputs,
                                                                                       num_beams, kind):
    device, host = device_and_host(bundle, runner, kind)
    ours = describe(bundle, device, region_inputs, num_beams=num_beams, min_new_tokens=2)
    theirs = describe(bundle, host, region_inputs, num_beams=num_beams, min_new_tokens=2)
    assert [d.token_ids for d in ours] == [d.token_ids for d in theirs]
    assert [d.score for d in ours] == [d.score for d in theirs]
    assert device.transfers.decode_steps == host.transfers.decode_steps > 0


def vocab_size(bundle) -> int:
    return next(spec.shape[-1] for spec in bundle.graph("llm").outputs if spec.name == "logits")


@pytest.mark.parametrize("max_new_tokens", [4, 8])
def test_a_greedy_step_moves_only_the_fed_ids_and_the_ranked_tokens_whatever_the_cache_length(
        bundle, runner, region_inputs, max_new_tokens):
    engine = GraphEngine(bundle, runner, device_kv=True)
    describe(bundle, engine, region_inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    rows = len(region_inputs[1])
    assert engine.transfers.decode_steps == max_new_tokens - 1
    assert engine.transfers.bytes_per_step == rows * 8 + rows * TOP_K * (4 + 8)  # int64 ids in; fp32 + int64 top-K out


def test_lifting_the_stop_token_s_ban_uploads_the_bias_once(bundle, runner, region_inputs):
    engine = GraphEngine(bundle, runner, device_kv=True)
    describe(bundle, engine, region_inputs, max_new_tokens=8, min_new_tokens=2)
    rows = len(region_inputs[1])
    assert engine.transfers.decode_bytes == 7 * (rows * 8 + rows * TOP_K * (4 + 8)) + 4 * vocab_size(bundle)


def test_numpy_feeds_move_the_whole_cache_every_step_so_their_bytes_grow_with_it(bundle, runner, region_inputs):
    per_step = {}
    for max_new_tokens in (4, 8):
        engine = GraphEngine(bundle, runner, device_kv=False)
        describe(bundle, engine, region_inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
        per_step[max_new_tokens] = engine.transfers.bytes_per_step
    llm, rows = bundle.manifest.llm, len(region_inputs[1])
    position = rows * llm.num_heads * llm.head_dim * 4 * len(llm.past_names)  # one cache position, fp32, every tensor
    # A step feeds the past (Q + s positions at step s) and fetches the present (one more): over steps 1..m-1 that
    # is 2Q + 1 + m positions a step on average, so four more tokens cost four more positions every step.
    assert per_step[8] - per_step[4] == pytest.approx(4 * position, rel=1e-9)


def test_beam_search_moves_the_reorder_s_row_ids_as_well(bundle, runner, region_inputs):
    engine = GraphEngine(bundle, runner, device_kv=True)
    describe(bundle, engine, region_inputs, num_beams=3, min_new_tokens=8)
    rows = 3 * len(region_inputs[1])
    assert engine.transfers.bytes_per_step == rows * 8 + rows * 8 + rows * TOP_K * (4 + 8)  # ids, rows, ranked


def test_decoding_past_the_step_s_max_length_is_a_kv_cache_overflow(bundle, runner, region_inputs):
    engine = GraphEngine(bundle, runner, device_kv=True)
    prompt = engine.soft_prompt("image_region", engine.features("image_region", region_inputs[0]),
                                *region_inputs[1:])
    step = DeviceLanguageModelStep(engine.memory, bundle, engine.adapter_ids(["image_region"] * len(prompt)),
                                   max_length=prompt.shape[1] + 3)
    chosen = dataclasses.replace(bundle.manifest.generation, max_new_tokens=8, min_new_tokens=8)
    with pytest.raises(KVCacheOverflow, match=f"preallocated for {prompt.shape[1] + 3} positions"):
        decode(step, prompt, chosen)


def test_the_cache_holds_the_dtype_the_graph_declares(bundle, runner):
    fp16 = {name: graph for name, graph in bundle.manifest.graphs.items()}
    fp16["llm"] = dataclasses.replace(fp16["llm"], inputs=[
        dataclasses.replace(spec, dtype="float16") if spec.name.startswith("past_") else spec
        for spec in fp16["llm"].inputs])
    assert DeviceLanguageModelStep(NumpyMemory(None, fp16), bundle, None, 10).kv_dtype == np.float16
    assert DeviceLanguageModelStep(runner.device_memory(), bundle, None, 10).kv_dtype == np.float32


def step_for(engine, bundle, num_beams):
    settings = dataclasses.replace(bundle.manifest.generation, num_beams=num_beams)
    return engine.language_model("image_region", np.zeros((2, 4, 1), np.float32), settings)


def test_onnx_runtime_on_cpu_binds_the_cache_for_beam_search_and_feeds_numpy_for_greedy(bundle, runner):
    from runtime.graph_engine import LanguageModelGraph

    engine = GraphEngine(bundle, runner)
    assert isinstance(step_for(engine, bundle, 1), LanguageModelGraph)  # measured the same speed either way
    assert isinstance(step_for(engine, bundle, 3), DeviceLanguageModelStep)  # measured faster bound
    assert isinstance(step_for(GraphEngine(bundle, runner, device_kv=True), bundle, 1), DeviceLanguageModelStep)


def test_more_beams_than_the_graph_ranks_for_decode_with_numpy_feeds(bundle, runner):
    from runtime.graph_engine import LanguageModelGraph

    engine = GraphEngine(bundle, runner, device_kv=True)  # beam search ranks 2 x num_beams tokens per row
    assert isinstance(step_for(engine, bundle, TOP_K // 2), DeviceLanguageModelStep)
    assert isinstance(step_for(engine, bundle, TOP_K // 2 + 1), LanguageModelGraph)
