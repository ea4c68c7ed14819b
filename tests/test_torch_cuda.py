"""The torch backend's CUDA fast path: fp16, static KV cache, the decode step in a CUDA graph. Needs a CUDA GPU."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from runtime import Describer  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA device visible to torch (torch.cuda.is_available() is False)")]

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
BOXES = [[0, 0, 30, 30], [10, 5, 60, 45], [40, 20, 64, 48]]


def describe(describer, **settings):
    describer.configure(**{"num_beams": 1, "max_new_tokens": 8, "min_new_tokens": 0, **settings})
    return describer.describe_image_regions(IMAGE, BOXES)


def test_cuda_defaults_to_the_static_decoder_in_fp16_with_graphs(tiny_checkpoint):
    engine = Describer.from_checkpoint(tiny_checkpoint, device="cuda").engine
    assert (engine.decoder, engine.precision, engine.cuda_graphs) == ("static", "fp16", True)


@pytest.mark.parametrize("settings", [dict(), dict(num_beams=3, min_new_tokens=2)], ids=["greedy", "beam"])
def test_fp32_graphs_give_the_references_tokens(tiny_checkpoint, settings):
    torch.backends.cudnn.allow_tf32 = False  # fp32 here means fp32
    graphed = Describer.from_checkpoint(tiny_checkpoint, device="cuda", precision="fp32")
    reference = Describer.from_checkpoint(tiny_checkpoint, device="cuda", decoder="transformers")
    assert [d.token_ids for d in describe(graphed, **settings)] == \
        [d.token_ids for d in describe(reference, **settings)]


def test_fp16_graphs_describe_every_region_and_capture_once(tiny_checkpoint):
    describer = Describer.from_checkpoint(tiny_checkpoint, device="cuda")
    first = describe(describer, min_new_tokens=8)
    captured = graph_ids(describer)
    again = describe(describer, min_new_tokens=8)
    assert [d.token_ids for d in again] == [d.token_ids for d in first]
    assert all(len(d.token_ids) == 8 and np.isfinite(d.score) for d in first)
    assert graph_ids(describer) == captured and list(captured) == [(4, 8 + 1 + 8)]  # 3 regions padded to 4


def graph_ids(describer) -> dict:
    return {key: {k: id(graph) for k, (graph, _) in cache.graphs.items()}
            for key, cache in describer.engine.static.caches.items()}
