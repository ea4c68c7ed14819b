"""The runtime benchmark runs end to end and reports what it measured (tiny sizes, one round; numbers come from
running it at the bench preset, see README). Timings are never asserted, only that they are reported."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result() -> dict:
    done = subprocess.run([sys.executable, "-m", "tools.bench_runtime", "--preset", "tiny", "--regions", "3",
                           "--tokens", "4", "--frames", "1", "--decode-steps", "3", "--rounds", "1",
                           "--quantized", "int8"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def assert_spread(value: dict, rounds: int = 1):
    assert len(value["rounds"]) == rounds
    assert value["min"] <= value["median"] <= value["max"]


def test_headline_is_the_runtime_against_the_batched_baseline_at_its_faster_thread_count(result):
    headline, by_threads = result["headline"], result["batched_baseline"]["by_threads"]
    assert set(by_threads) == {"1", "2"}
    [threads] = headline["batched_baseline_threads"]  # one round
    assert headline["batched_baseline_rois_per_s"]["median"] == max(
        engine["rois_per_s"]["median"] for engine in by_threads.values())
    assert headline["batched_baseline_rois_per_s"] == by_threads[str(threads)]["rois_per_s"]
    assert headline["onnxruntime_rois_per_s"] == result["onnxruntime"]["rois_per_s"]
    assert headline["speedup_vs_batched_baseline"]["median"] == pytest.approx(
        headline["onnxruntime_rois_per_s"]["median"] / headline["batched_baseline_rois_per_s"]["median"])


def test_every_engine_reports_throughput_and_its_spread_over_rounds(result):
    engines = [result["onnxruntime"], result["per_crop_baseline"], *result["batched_baseline"]["by_threads"].values()]
    for engine in engines:
        for key in ("rois_per_s", "ms_per_frame"):
            assert_spread(engine[key])
            assert engine[key]["median"] > 0
    assert_spread(result["speedup_vs_per_crop_baseline"])
    assert result["torch_runtime"]["rois_per_s"] > 0
    assert len(result["load_average_1min"]) == 2


def test_token_agreement_is_a_fraction_and_backends_of_one_model_agree(result):
    agreement = result["token_agreement"]
    assert all(0.0 <= value <= 1.0 for value in agreement.values())
    assert agreement["onnxruntime_vs_torch_runtime"] == 1.0
    assert agreement["batched_vs_per_crop_baseline"] == 1.0  # the batched peer is the same model on the same crops


def test_limits_give_read_and_compute_bounds_at_batch_1_and_at_the_frame_s_regions(result):
    limits = result["limits"]
    assert 0 < limits["vocab_share"] < 1
    assert limits["lm_head_mb"] == pytest.approx(limits["vocab_share"] * limits["llm_weights_read_per_step_mb"])
    assert limits["read_gb_per_s"]["median"] > 0.1
    for batch in ("batch_1", "batch_3"):
        step = limits[batch]
        for key in ("decode_ms_per_step", "gemm_gflops", "decode_vs_read_bound", "decode_vs_compute_bound",
                    "decode_vs_compute_bound_square_rate"):
            assert_spread(step[key])
        assert step["decode_vs_read_bound"]["median"] == pytest.approx(
            step["decode_ms_per_step"]["median"] / limits["read_bound_ms"])
        assert step["decode_vs_compute_bound"]["median"] == pytest.approx(
            step["decode_ms_per_step"]["median"] / step["compute_bound_ms"])
    assert limits["batch_3"]["flops_per_step"] == pytest.approx(3 * limits["batch_1"]["flops_per_step"])
    assert "limits.read_bound_ms" in result["definitions"]


def test_a_quantized_variant_is_timed_against_the_same_peer_and_the_fp32_runtime(result):
    quantized = result["quantized"]
    assert quantized["variant"] == "int8"
    assert_spread(quantized["rois_per_s"])
    assert quantized["speedup_vs_fp32_runtime"]["median"] == pytest.approx(
        quantized["rois_per_s"]["median"] / result["onnxruntime"]["rois_per_s"]["median"])
    assert set(quantized["decode_ms_per_step"]) == {"1", "3"}
    assert 0 <= quantized["token_agreement_with_fp32_runtime"] <= 1
