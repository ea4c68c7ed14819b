"""Spin nodes until SIGINT or SIGTERM, then shut them down in order: executor, nodes, context.

The executor spins on a thread of its own while the main thread waits for a signal, so a signal never lands
in the middle of a callback or of the executor's bookkeeping, and SIGTERM (what systemd, docker and
launch send) stops the nodes as cleanly as Ctrl-C.
"""

import signal
import threading

from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def spin_until_signal(nodes: list[Node], context: Context, num_threads: int) -> None:
    """Spin `nodes` on a MultiThreadedExecutor until SIGINT/SIGTERM (or the context shuts down), then destroy
    them and shut the context down. Call from the main thread: only it can receive signals."""
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in STOP_SIGNALS}
    executor = MultiThreadedExecutor(num_threads=num_threads, context=context)
    for node in nodes:
        executor.add_node(node)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass
        finally:
            stop.set()

    spinner = threading.Thread(target=spin, name="executor")
    spinner.start()
    try:
        while not stop.wait(0.2):  # a timed wait, so that the handler runs promptly on every platform
            pass
    finally:
        executor.shutdown()
        spinner.join()
        for node in nodes:
            node.destroy_node()
        context.try_shutdown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
