"""tools/bench_transport: the shipped Fast DDS profile loads and carries full-HD frames; the report's shape."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from tools import bench_transport  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FULL_HD_RGB8_BYTES = 1920 * 1080 * 3
NS = {"dds": "http://www.eprosima.com"}


def test_profile_is_the_default_participant_profile_with_a_segment_for_several_full_hd_frames():
    profiles = ElementTree.parse(bench_transport.PROFILE).getroot().find("dds:profiles", NS)
    participant = profiles.find("dds:participant[@is_default_profile='true']", NS)
    used = {element.text for element in participant.findall("dds:rtps/dds:userTransports/dds:transport_id", NS)}
    segments = [int(descriptor.find("dds:segment_size", NS).text)
                for descriptor in profiles.findall("dds:transport_descriptors/dds:transport_descriptor", NS)
                if descriptor.find("dds:type", NS).text == "SHM"
                and descriptor.find("dds:transport_id", NS).text in used]
    assert participant.find("dds:rtps/dds:useBuiltinTransports", NS).text == "false"
    assert len(segments) == 1 and segments[0] >= 3 * FULL_HD_RGB8_BYTES


def test_fast_dds_loads_the_profile_into_a_ros_process():
    probe = ("import os, rclpy; rclpy.init(); node = rclpy.create_node('profile_probe');"
             "print(max(int(b, 16) - int(a, 16) for a, b in (line.split()[0].split('-') for line in "
             "open(f'/proc/{os.getpid()}/maps') if '/dev/shm/fastdds_' in line and '_port' not in line)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30,
                          env=bench_transport.child_env(bench_transport.SHIPPED, True))
    assert done.returncode == 0, done.stderr
    assert "XMLPARSER" not in done.stderr
    assert int(done.stdout) >= 3 * FULL_HD_RGB8_BYTES  # the participant mapped the profile's segment


def test_full_hd_frames_cross_between_processes_with_the_shipped_config():
    args = bench_transport.make_parser().parse_args(["--frames", "5", "--rate", "10"])

    result = bench_transport.bench_pair(bench_transport.SHIPPED, 1920, 1080, args)

    assert result["sent"] == 5
    assert result["received"] >= 1  # with the default transports 1080p frames hardly ever arrive
    assert result["bytes_per_frame"] == FULL_HD_RGB8_BYTES


def test_report_is_one_json_document_with_a_row_per_config_and_size():
    done = subprocess.run([sys.executable, "-m", "tools.bench_transport", "--configs", "default",
                           "--sizes", "64x48,32x24", "--frames", "4"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    report = json.loads(done.stdout)

    assert [(row["config"], row["size"]) for row in report["results"]] == [("default", "64x48"), ("default", "32x24")]
    for row in report["results"]:
        assert row["sent"] == 4 and 0 <= row["received"] <= 4
        assert row["delivered"] == row["received"] / row["sent"]
        assert {"latency_p50_ms", "latency_p99_ms", "publish_rate_hz"} <= row.keys()
    assert report["target"]["size"] == "64x48"
    assert done.stderr.count("frames, p50") == 2  # one progress line per row


def test_unknown_config_is_refused_with_the_known_ones():
    done = subprocess.run([sys.executable, "-m", "tools.bench_transport", "--configs", "zero_copy"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)

    assert done.returncode == 2
    assert "unknown config zero_copy: use some of default, large_data, shm, profile" in done.stderr
