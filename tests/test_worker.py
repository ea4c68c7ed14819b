"""regionblip_ros.worker: the newest job of each sensor runs on a thread; older pending ones are dropped."""

import threading
import time

import pytest

from regionblip_ros.worker import LatestJobWorker

TIMEOUT_S = 5.0


class Recorder:
    """A handler that records (sensor, job) and, while `gate` is clear, holds the worker on its first job."""

    def __init__(self):
        self.ran: list[tuple[str, object]] = []
        self.errors: list[tuple[str, object, Exception]] = []
        self.started = threading.Event()
        self.gate = threading.Event()

    def handle(self, sensor, job):
        self.started.set()
        assert self.gate.wait(TIMEOUT_S), "the test never opened the gate"
        if job == "bad":
            raise ValueError("a job the handler cannot do")
        self.ran.append((sensor, job))

    def on_error(self, sensor, job, error):
        self.errors.append((sensor, job, error))


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def worker(recorder):
    worker = LatestJobWorker(recorder.handle, recorder.on_error)
    yield worker
    recorder.gate.set()
    worker.stop()


def hold_worker_busy(worker, recorder, sensor="camera"):
    """Submit a job and wait until the worker is inside it (and stuck there until the gate opens)."""
    worker.submit(sensor, "running")
    assert recorder.started.wait(TIMEOUT_S)


def test_a_submitted_job_runs_on_the_worker_thread(worker, recorder):
    recorder.gate.set()
    worker.submit("camera", "frame 1")
    assert worker.wait_idle(TIMEOUT_S)
    assert recorder.ran == [("camera", "frame 1")]
    assert worker.processed() == {"camera": 1}


def test_while_busy_only_the_latest_job_per_sensor_runs_and_the_others_count_as_dropped(worker, recorder):
    hold_worker_busy(worker, recorder)
    for frame in range(1, 6):
        worker.submit("camera", f"frame {frame}")
    recorder.gate.set()
    assert worker.wait_idle(TIMEOUT_S)
    assert recorder.ran == [("camera", "running"), ("camera", "frame 5")]
    assert worker.dropped() == {"camera": 4}


def test_each_sensor_keeps_its_own_pending_slot(worker, recorder):
    hold_worker_busy(worker, recorder)
    worker.submit("camera", "image 1")
    worker.submit("lidar", "cloud 1")
    worker.submit("lidar", "cloud 2")
    recorder.gate.set()
    assert worker.wait_idle(TIMEOUT_S)
    assert sorted(recorder.ran[1:]) == [("camera", "image 1"), ("lidar", "cloud 2")]
    assert worker.dropped() == {"lidar": 1}


def test_the_sensor_that_waited_longest_runs_first(worker, recorder):
    hold_worker_busy(worker, recorder)
    worker.submit("lidar", "cloud 1")
    worker.submit("camera", "image 1")
    worker.submit("lidar", "cloud 2")  # replaces cloud 1 but keeps its place in line
    recorder.gate.set()
    assert worker.wait_idle(TIMEOUT_S)
    assert recorder.ran[1:] == [("lidar", "cloud 2"), ("camera", "image 1")]


def test_submit_returns_at_once_while_the_worker_is_busy(worker, recorder):
    hold_worker_busy(worker, recorder)
    start = time.perf_counter()
    replaced = [worker.submit("camera", f"frame {i}") for i in range(1000)]
    elapsed_s = time.perf_counter() - start
    assert elapsed_s < 0.5
    assert replaced == [False] + [True] * 999


def test_a_job_that_raises_goes_to_on_error_and_the_worker_carries_on(worker, recorder):
    recorder.gate.set()
    worker.submit("camera", "bad")
    assert worker.wait_idle(TIMEOUT_S)
    worker.submit("camera", "good")
    assert worker.wait_idle(TIMEOUT_S)
    assert [(sensor, job, str(error)) for sensor, job, error in recorder.errors] == [
        ("camera", "bad", "a job the handler cannot do")]
    assert recorder.ran == [("camera", "good")]


def test_stop_drops_pending_jobs_and_ends_the_thread(recorder):
    worker = LatestJobWorker(recorder.handle, recorder.on_error, name="stop_test_worker")
    hold_worker_busy(worker, recorder)
    worker.submit("camera", "never runs")
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    recorder.gate.set()
    stopper.join(TIMEOUT_S)
    assert not stopper.is_alive()
    assert recorder.ran == [("camera", "running")]
    assert "stop_test_worker" not in [thread.name for thread in threading.enumerate()]
