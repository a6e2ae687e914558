"""A minimal node run through apo_ros.run_node, for test_run_node.py (started as a subprocess)."""

import os
import signal
import sys
import time
from dataclasses import dataclass, field

from rclpy.node import Node

from apo_ros.node import run_node
from apo_ros.params import load_parameters


@dataclass
class DemoConfig:
    rate_hz: float = field(default=20.0, metadata={"help": "timer rate"})
    shutdown_seconds: float = field(default=1.5, metadata={"help": "how long on_shutdown takes"})
    fail_after_signal: bool = field(default=False, metadata={
        "help": "SIGTERM this process while building, then fail as a child killed by that signal would"})


class DemoNode(Node):
    def __init__(self):
        super().__init__("apo_ros_demo", automatically_declare_parameters_from_overrides=True)
        self.cfg = load_parameters(self, DemoConfig)
        if self.cfg.fail_after_signal:
            if not os.environ.get("APO_DEMO_NO_SIGNAL"):
                os.kill(os.getpid(), signal.SIGTERM)
            raise RuntimeError("helper process died")
        self._said = False
        self.create_timer(1.0 / self.cfg.rate_hz, self._tick)

    def _tick(self):
        if not self._said:
            self._said = True
            print("spinning", flush=True)

    def on_shutdown(self):
        print("shutting down", flush=True)
        time.sleep(self.cfg.shutdown_seconds)  # a second SIGINT arrives here
        print("shutdown done", flush=True)


if __name__ == "__main__":
    rc = run_node(DemoNode, "apo_ros_demo", interrupt_build="--no-interrupt-build" not in sys.argv)
    if "--linger" in sys.argv:  # a process still exiting when launch's forwarded Ctrl-C arrives
        print("exiting", flush=True)
        time.sleep(1.0)
    sys.exit(rc)
