"""tools/gpu_check: its structure, run at the tiny size on the CPU (the GPU run uses the same code at full size)."""
import json

import pytest

torch = pytest.importorskip("torch")

from tools.gpu_check import main  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "report.json"
    assert main(["--device", "cpu", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def stat_is_real(figure: dict) -> bool:
    return 0 < figure["min"] <= figure["median"] <= figure["max"] and figure["repeats"] >= 1 and "timer" in figure


def test_no_section_fails(report):
    assert [name for name, value in report.items() if '"error"' in json.dumps(value)] == []


def test_the_describer_figures_are_measured(report):
    for name in ("describer", "describer_transformers_fp32"):
        figures = report[name]
        assert stat_is_real(figures["ms_per_frame"])
        assert figures["rois_per_s"] == pytest.approx(figures["regions"] / figures["ms_per_frame"]["median"] * 1e3)
    assert report["describer"]["decoder"] == "static"
    assert report["describer_transformers_fp32"]["decoder"] == "transformers"


def test_decode_and_release_figures_are_per_batch_and_say_why_graphs_are_absent(report):
    regions = report["conditions"]["regions"]
    for section in ("decode", "release"):
        for batch in ("batch_1", f"batch_{regions}"):
            figures = report[section]["eager"][batch]
            assert stat_is_real(figures["ms_per_token"]) and stat_is_real(figures["device_ms_per_token"])
            assert figures["kv_cache_bytes"] > 0
        assert report[section]["graph"] == {"absent": "CUDA graphs need a CUDA device"}


def test_the_release_bound_is_its_weight_bytes_over_the_measured_read_rate(report):
    release, bandwidth = report["release"], report["memory_bandwidth"]
    assert bandwidth["read_gb_per_s"] == max(bandwidth["copy_gb_per_s"], bandwidth["sum_gb_per_s"]) > 0
    assert release["read_bound_ms"] == pytest.approx(release["weight_bytes"] / bandwidth["read_gb_per_s"] / 1e6)
    assert release["eager"]["batch_1"]["vs_read_bound"] > 0


def test_agreement_is_a_fraction_and_the_static_decoder_equals_the_reference(report):
    agreement = report["agreement"]
    for name in ("fp16", "bf16", "transformers_fp32"):
        assert 0 <= agreement[name]["sequences"] <= agreement[name]["tokens"] <= 1
    assert agreement["transformers_fp32"] == {"sequences": 1.0, "tokens": 1.0}


def test_absent_backends_say_why(report):
    for name in ("tensorrt", "onnxruntime_cuda"):
        assert report[name]["present"] is False and report[name]["why"]


def test_every_figure_comes_with_its_conditions(report):
    conditions = report["conditions"]
    assert conditions["statistic"] == "median" and conditions["warmup"] >= 0 and conditions["repeats"] >= 1
    assert set(report["definitions"]) and report["environment"]["device"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: --device cuda would run")
def test_cuda_without_a_gpu_is_refused_in_one_line(capsys):
    assert main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torch sees no CUDA device" in err[0] and "--device cpu" in err[0]
