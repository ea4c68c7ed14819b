"""regionblip_ros/executor.py: a ready task that rclpy's executor yields again before a pool thread has started it
is submitted once, not once per yield (the copies starved the node in a 30 Hz burst: tests/test_node_burst.py)."""
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (make setup installs it)")

from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.task import Future  # noqa: E402

from regionblip_ros.executor import NodeExecutor  # noqa: E402


class CountingPool:
    def __init__(self):
        self.submitted = []

    def submit(self, handler):
        self.submitted.append(handler)


def yield_twice_then_finish(executor_class, ros_context) -> tuple[CountingPool, Future, MultiThreadedExecutor]:
    """Spin twice while the same ready task is yielded (not yet started), then once after it has finished."""
    executor = executor_class(num_threads=2, context=ros_context)
    task = Future()
    executor.wait_for_ready_callbacks = lambda *args, **kwargs: (task, None, None)
    executor._executor = pool = CountingPool()
    executor._spin_once_impl(0.0)
    executor._spin_once_impl(0.0)
    task.set_result(None)
    executor._spin_once_impl(0.0)  # a finished task leaves the pending list
    return pool, task, executor


def test_a_task_yielded_again_while_queued_is_submitted_once(ros_context):
    pool, task, executor = yield_twice_then_finish(NodeExecutor, ros_context)
    assert pool.submitted == [task]
    assert executor._futures == []


def test_rclpys_own_executor_submits_it_each_time_it_is_yielded(ros_context):
    # what NodeExecutor exists for: if rclpy stops doing this, NodeExecutor can go
    pool, task, _ = yield_twice_then_finish(MultiThreadedExecutor, ros_context)
    assert pool.submitted == [task, task, task]
