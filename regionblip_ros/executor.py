"""The executor the region_describer spins on: rclpy's MultiThreadedExecutor, submitting each ready callback once.

rclpy's MultiThreadedExecutor (checked on Kilted's rclpy 9.1) yields a ready entity's task again on every turn of
its loop until a pool thread has started it, and submits it to the thread pool each time. Under a burst (30 Hz
images and region arrays) the pool's queue fills with copies of the same few tasks, the real ones wait behind them,
which makes the loop yield them yet again: the process spins a core at 100 % while callbacks run late and the
subscriptions' queues overflow. Measured with tests/test_node_burst.py's 20 s burst on an idle 2-core machine:
thousands of queued copies, 190 of 600 images and 290 of 600 region arrays received, 0.67 s median latency; with
each task submitted once, 600 and 600, 0.13 s. Where the executor's internals differ (other rclpy versions), it
runs as rclpy's own.
"""
import time

from rclpy.executors import (
    ConditionReachedException, ExternalShutdownException, MultiThreadedExecutor, ShutdownException, TimeoutException,
)

YIELD_S = 0.0005  # a task yielded again while still queued: let the pool start it instead of spinning


class NodeExecutor(MultiThreadedExecutor):
    """A MultiThreadedExecutor that submits a ready task to its pool only once."""

    def _spin_once_impl(self, timeout_sec=None, wait_condition=lambda: False) -> None:
        if not (hasattr(self, "_futures") and hasattr(self, "_executor")):  # not the rclpy this was written for
            return super()._spin_once_impl(timeout_sec, wait_condition)
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        if any(handler is queued for queued in self._futures):
            time.sleep(YIELD_S)
        else:
            self._executor.submit(handler)
            self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # raise any exception of the callback, as rclpy's does
