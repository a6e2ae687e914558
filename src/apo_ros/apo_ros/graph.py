"""Real rclpy nodes in-process: an isolated context, an executor thread, waiting helpers.

Used by tests and benchmarks, and by clients of a running graph (``apo_bringup.session.DeploySession``).
An exception raised in a callback is printed and kept in ``RosGraph.errors``; it is never swallowed.

Usage::

    with RosGraph() as g:
        node = g.add(MyNode(context=g.context))
        probe = g.probe_node("probe")
        ...
        g.wait_until(lambda: len(received) >= 3, timeout=10)

Shutdown order matters (ENVIRONMENT.md): the executor is shut down and its thread joined before the
context, otherwise rclpy aborts the process.
"""

from __future__ import annotations

import threading
import time
import traceback


class RosGraph:
    def __init__(self, num_threads: int = 4):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor

        self._rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=num_threads, context=self.context)
        self.nodes = []
        self.errors: list[BaseException] = []  # exceptions raised in callbacks (also printed)
        self._closing = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        # spin_once in a loop rather than spin(): an exception raised in a node's callback is printed
        # and kept in ``errors`` and the graph keeps running, instead of the executor stopping silently
        # (which would surface in a test only as a timeout far from its cause).
        from rclpy.executors import ExternalShutdownException, ShutdownException

        while not self._closing and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except (ExternalShutdownException, ShutdownException):
                break
            except Exception as exc:
                if self._closing or not self.context.ok():
                    break
                if not any(e is exc for e in self.errors):  # the executor may re-raise the same one
                    self.errors.append(exc)
                    traceback.print_exception(exc)

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def probe_node(self, name: str = "test_probe"):
        return self.add(self._rclpy.create_node(name, context=self.context))

    @staticmethod
    def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 10.0) -> None:
        self.wait_until(lambda: publisher.get_subscription_count() >= count, timeout,
                        what=f"{count} subscriber(s) on {publisher.topic_name}")

    def wait_for_publishers(self, node, topic: str, count: int = 1, timeout: float = 10.0) -> None:
        self.wait_until(lambda: node.count_publishers(topic) >= count, timeout, what=f"publisher on {topic}")

    def call(self, client, request, timeout: float = 10.0):
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        self.wait_until(future.done, timeout, what=f"response from {client.srv_name}")
        return future.result()

    def close(self):
        self._closing = True
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=5.0)
        for node in self.nodes:
            try:
                node.destroy_node()
            except Exception:
                pass
        if self.context.ok():
            self._rclpy.shutdown(context=self.context)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
