"""The runtime benchmark runs end to end and reports what it measured (tiny sizes; numbers come from
running it at the bench preset, see README)."""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_reports_throughput_ratio_token_identity_and_the_bandwidth_bound():
    done = subprocess.run([sys.executable, "-m", "tools.bench_runtime", "--preset", "tiny", "--regions", "3",
                           "--tokens", "4", "--frames", "1", "--decode-steps", "3"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["greedy_tokens_identical_onnxruntime_vs_torch"] is True
    for engine in ("baseline", "onnxruntime", "torch"):
        assert result[engine]["rois_per_s"] > 0 and result[engine]["ms_per_frame"] > 0
    assert result["speedup_rois_per_s"] == pytest.approx(
        result["onnxruntime"]["rois_per_s"] / result["baseline"]["rois_per_s"])
    assert result["onnxruntime"]["bandwidth_bound_ms"] > 0 and result["onnxruntime"]["memcpy_gb_per_s"] > 0.1
