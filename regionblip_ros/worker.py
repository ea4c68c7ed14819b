"""A worker thread that runs the latest job of each sensor, so that callbacks never wait for the model.

Each sensor (camera, lidar) has one pending slot. Submitting puts the job in its sensor's slot and returns at
once; a job still waiting there is replaced and counted as dropped, because a newer frame makes it stale.
The thread takes the slot that has waited longest, so one busy sensor cannot starve the other.
"""

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class LatestJobWorker:
    """Runs handler(sensor, job) on its own thread for the newest job of each sensor.

    An exception from the handler goes to on_error(sensor, job, exception) and the thread carries on.
    """

    def __init__(self, handler: Callable[[Hashable, Any], None],
                 on_error: Callable[[Hashable, Any, Exception], None], name: str = "describer_worker"):
        self._handler = handler
        self._on_error = on_error
        self._pending: OrderedDict[Hashable, Any] = OrderedDict()
        self._dropped: dict[Hashable, int] = {}
        self._processed: dict[Hashable, int] = {}
        self._busy = False
        self._stopping = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, sensor: Hashable, job: Any) -> bool:
        """Queue `job` for `sensor`, replacing its pending job; True when one was replaced (a drop)."""
        with self._condition:
            replaced = sensor in self._pending
            if replaced:
                self._dropped[sensor] = self._dropped.get(sensor, 0) + 1
            self._pending[sensor] = job  # a replaced slot keeps its place in line
            self._condition.notify()
            return replaced

    def dropped(self) -> dict[Hashable, int]:
        """Jobs replaced before they ran, per sensor."""
        with self._condition:
            return dict(self._dropped)

    def processed(self) -> dict[Hashable, int]:
        """Jobs the handler finished (or raised on), per sensor."""
        with self._condition:
            return dict(self._processed)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no job is pending or running; False if that took longer than timeout_s."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._pending and not self._busy, timeout_s)

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stopping

    def stop(self, timeout_s: float = 5.0) -> None:
        """Drop pending jobs, let a running one finish (up to timeout_s) and end the thread."""
        with self._condition:
            self._stopping = True
            self._pending.clear()
            self._condition.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                sensor, job = self._pending.popitem(last=False)
                self._busy = True
            try:
                self._handler(sensor, job)
            except Exception as error:  # the worker outlives any one bad job
                self._on_error(sensor, job, error)
            finally:
                with self._condition:
                    self._busy = False
                    self._processed[sensor] = self._processed.get(sensor, 0) + 1
                    self._condition.notify_all()
