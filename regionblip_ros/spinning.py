"""Spin nodes until SIGINT or SIGTERM, then shut them down in order: their work, executor, nodes, context.

The executor spins on a thread of its own while the main thread waits for a signal, so a signal never lands
in the middle of a callback or of the executor's bookkeeping, and SIGTERM (what systemd, docker and
launch send) stops the nodes as cleanly as Ctrl-C. If the executor itself dies on an error, that is not a
stop: the error is printed and the exit status is 1, so that a supervisor restarting on failure restarts.
"""

import signal
import sys
import threading
import traceback
from collections.abc import Callable

from rclpy.context import Context
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from regionblip_ros.executor import NodeExecutor

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _nothing() -> None:
    pass


def spin_until_signal(nodes: list[Node], context: Context, num_threads: int,
                      before_shutdown: Callable[[], None] = _nothing) -> int:
    """Spin `nodes` on a NodeExecutor (regionblip_ros/executor.py) until SIGINT/SIGTERM (or the context shuts
    down), then call before_shutdown (which should cancel long work, since the executor waits for running
    callbacks), destroy the nodes and shut the context down. Returns the exit status: 0 after a stop, 1 when the
    executor died on an error. Call from the main thread: only it can receive signals."""
    stop = threading.Event()
    failure: list[BaseException] = []
    names = ", ".join(node.get_name() for node in nodes)
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in STOP_SIGNALS}
    executor = NodeExecutor(num_threads=num_threads, context=context)
    for node in nodes:
        executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass
        except Exception as error:
            failure.append(error)
        finally:
            stop.set()

    spinner = threading.Thread(target=spin, name="executor")
    spinner.start()
    try:
        while not stop.wait(0.2):  # a timed wait, so that the handler runs promptly on every platform
            pass
    finally:
        before_shutdown()
        executor.shutdown()
        spinner.join()
        for node in nodes:
            node.destroy_node()
        context.try_shutdown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failure:
        traceback.print_exception(failure[0], file=sys.stderr)
        print(f"{names}: the executor stopped on an unexpected error: {failure[0]!r}", file=sys.stderr)
        return 1
    return 0
