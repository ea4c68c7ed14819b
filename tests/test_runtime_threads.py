"""runtime/threads.py: the intra-op thread count measured for a bundle on this machine, and used by later loads."""
import json
import os
import shutil

import pytest

from runtime.cli import main
from runtime.describer import Describer
from runtime.threads import THREADS_NAME, recorded_threads, tune_threads


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")  # the session's bundle stays without a record


def intra_op_threads(describer) -> set[int]:
    return {session.get_session_options().intra_op_num_threads for session in describer.engine.runner.sessions.values()}


def test_the_fastest_measured_count_is_kept_and_later_loads_use_it(bundle):
    assert recorded_threads(bundle) is None
    record = tune_threads(bundle, candidates=[1, 2], repeats=1)
    assert set(record["ms"]) == {"1", "2"} and all(ms > 0 for ms in record["ms"].values())
    assert record["threads"] == min((1, 2), key=lambda count: record["ms"][str(count)])
    assert recorded_threads(bundle) == record["threads"]
    assert intra_op_threads(Describer.from_bundle(bundle)) == {record["threads"]}
    assert intra_op_threads(Describer.from_bundle(bundle, threads=3)) == {3}  # an explicit count wins


@pytest.mark.parametrize("record", [
    "not json",
    json.dumps({"format": 1, "threads": 1, "cpu_count": -1}),  # measured on another machine
    json.dumps({"format": 1, "threads": 0, "cpu_count": os.cpu_count()}),
    json.dumps({"format": 99, "threads": 1, "cpu_count": os.cpu_count()}),
])
def test_a_record_from_elsewhere_or_damaged_is_ignored(bundle, record):
    (bundle / THREADS_NAME).write_text(record)
    assert recorded_threads(bundle) is None
    assert intra_op_threads(Describer.from_bundle(bundle)) == {0}  # ONNX Runtime's default: all cores


def test_the_cli_tunes_in_one_line(bundle, capsys):
    assert main(["--bundle", str(bundle), "--tune-threads"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "is fastest here" in out[0]
    assert recorded_threads(bundle) is not None


def test_idle_sessions_do_not_spin(tiny_bundle):
    # A bundle's sessions take turns; a spinning idle pool took the cores from the busy one (runtime/onnx_runner.py).
    sessions = Describer.from_bundle(tiny_bundle, threads=2).engine.runner.sessions.values()
    assert {s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") for s in sessions} == {"0"}
