"""regionblip_ros.diagnostics: rates, latency percentiles and a status that warns about new problems."""

import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("diagnostic_msgs", reason="the ROS message packages are not installed")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from regionblip_ros.diagnostics import InputStats, diagnostic_status  # noqa: E402


class FakeClock:
    def __init__(self):
        self.now = 10.0

    def __call__(self):
        return self.now


def test_rates_count_the_messages_since_the_previous_reading():
    clock = FakeClock()
    stats = InputStats(clock)
    for _ in range(30):
        stats.received("image")
    stats.received("regions_2d")
    clock.now += 2.0
    assert stats.rates_hz() == {"image": 15.0, "regions_2d": 0.5}
    clock.now += 1.0
    stats.received("image")
    assert stats.rates_hz() == {"image": 1.0, "regions_2d": 0.0}
    assert stats.counts() == {"image": 31, "regions_2d": 1}


def test_latency_percentiles_cover_the_recent_frames():
    stats = InputStats(FakeClock())
    assert stats.latency_percentiles_ms() == {}
    for ms in range(1, 101):
        stats.latency(float(ms))
    assert stats.latency_percentiles_ms() == {"p50": pytest.approx(50.5), "p95": pytest.approx(95.05)}


def test_the_status_is_ok_without_new_problems_and_lists_every_value():
    status = diagnostic_status("/robot/region_describer", "onnxruntime", {"image": 15.0}, {"camera": 3},
                               {"image": 2}, 0, {"p50": 12.0, "p95": 30.25})
    assert (status.level, status.name, status.hardware_id, status.message) == (
        DiagnosticStatus.OK, "/robot/region_describer", "onnxruntime", "describing")
    assert {kv.key: kv.value for kv in status.values} == {
        "backend": "onnxruntime", "image rate (Hz)": "15.00", "camera jobs dropped": "3",
        "latency p50 (ms)": "12.0", "latency p95 (ms)": "30.2", "bad input: image": "2"}


def test_the_status_warns_when_problems_are_new_since_the_last_report():
    status = diagnostic_status("/region_describer", "torch", {}, {}, {"points": 4}, 4, {})
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "4 inputs skipped since the last report: see the log"


def test_the_description_cache_counts_are_listed_when_the_cache_is_on():
    cache = {"hits": 5, "misses": 2, "misses: new": 2, "entries": 2}
    status = diagnostic_status("/region_describer", "onnxruntime", {}, {}, {}, 0, {}, cache)
    values = {kv.key: kv.value for kv in status.values}
    assert {key: values[key] for key in values if key.startswith("description cache")} == {
        "description cache hits": "5", "description cache misses": "2", "description cache misses: new": "2",
        "description cache entries": "2"}
