"""The node's health on /diagnostics: input rates, drops, unmatched region arrays, latency, bad inputs, and the
description cache's hits and misses.

InputStats is written to from callbacks and the worker thread and read by the diagnostics timer; it is
thread-safe. diagnostic_status turns one reading into a DiagnosticStatus.
"""

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

LATENCY_WINDOW = 200  # latencies kept for the percentiles: the last ones, so they follow the current load


class InputStats:
    """Messages received per topic and frame latencies (ms), both since the node started."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._received: dict[str, int] = {}
        self._latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_counts: dict[str, int] = {}
        self._last_time = clock()

    def received(self, topic: str) -> None:
        with self._lock:
            self._received[topic] = self._received.get(topic, 0) + 1

    def latency(self, milliseconds: float) -> None:
        with self._lock:
            self._latencies_ms.append(milliseconds)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._received)

    def rates_hz(self) -> dict[str, float]:
        """Messages per second per topic since the previous call."""
        now = self._clock()
        with self._lock:
            elapsed = max(now - self._last_time, 1e-9)
            rates = {topic: (count - self._last_counts.get(topic, 0)) / elapsed
                     for topic, count in self._received.items()}
            self._last_counts, self._last_time = dict(self._received), now
        return rates

    def latency_percentiles_ms(self) -> dict[str, float]:
        """p50 and p95 of the recent latencies; empty before the first frame is described."""
        with self._lock:
            latencies = np.array(self._latencies_ms)
        if latencies.size == 0:
            return {}
        p50, p95 = np.percentile(latencies, [50, 95])
        return {"p50": float(p50), "p95": float(p95)}


def diagnostic_status(name: str, backend: str, rates_hz: dict[str, float], dropped: dict[str, int],
                      problems: dict[str, int], new_problems: int, latency_ms: dict[str, float],
                      cache: dict[str, int] | None = None) -> DiagnosticStatus:
    """OK while no problem is new since the last report, WARN (with how many) when some are. `cache`: the
    description cache's counts since the node started (DescriptionCache.counts), None when it is off."""
    values = [KeyValue(key="backend", value=backend)]
    values += [KeyValue(key=f"{topic} rate (Hz)", value=f"{rate:.2f}") for topic, rate in sorted(rates_hz.items())]
    values += [KeyValue(key=f"{sensor} jobs dropped", value=str(count)) for sensor, count in sorted(dropped.items())]
    values += [KeyValue(key=f"latency {p} (ms)", value=f"{ms:.1f}") for p, ms in sorted(latency_ms.items())]
    values += [KeyValue(key=f"bad input: {kind}", value=str(count)) for kind, count in sorted(problems.items())]
    if cache is not None:
        values += [KeyValue(key=f"description cache {name}", value=str(count))
                   for name, count in sorted(cache.items())]
    if new_problems:
        level, message = DiagnosticStatus.WARN, f"{new_problems} inputs skipped since the last report: see the log"
    else:
        level, message = DiagnosticStatus.OK, "describing"
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=backend, values=values)
