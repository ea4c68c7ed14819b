"""Bad inputs are counted per kind and logged throttled: the first at once, then at most once per period.

A sensor that publishes a malformed message usually publishes thousands; one line every few seconds with a
count says as much as a line per message, and keeps the log readable.
"""

import threading
import time
from collections.abc import Callable


class ThrottledReporter:
    """Counts problems by kind and logs each kind's first occurrence and then at most one line per period.

    log(message) is called outside the internal lock, from whichever thread reported the problem.
    """

    def __init__(self, log: Callable[[str], None], period_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._last_logged: dict[str, float] = {}

    def report(self, kind: str, message: str) -> bool:
        """Count one problem of `kind`; log `message` if this kind is due. True when a line was logged."""
        now = self._clock()
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            last = self._last_logged.get(kind)
            if last is not None and now - last < self._period_s:
                return False
            repeated, self._unlogged[kind] = self._unlogged[kind], 0
            self._last_logged[kind] = now
        if repeated > 1:
            message = f"{message} [{kind}: {repeated} times in the last {now - last:.1f} s]"
        self._log(f"{message} [{kind}]" if repeated == 1 else message)
        return True

    def counts(self) -> dict[str, int]:
        """Problems reported so far, per kind."""
        with self._lock:
            return dict(self._counts)
