"""The one entry point body of every APO-ROS node: ``sys.exit(run_node(MyNode, "apo_my_node", args))``.

What it does, the same for every node:

* ``rclpy.init`` with rclpy's own signal handlers off (they would shut the context down before the
  node's ``on_shutdown`` could send its last message, cancel a job or close a bag); malformed ROS
  arguments -> one line on stderr, exit code 2.
* SIGINT and SIGTERM behave the same. While the node is being built (loading a model, starting a
  simulator) the first signal interrupts the build, unless ``interrupt_build=False`` (then the build
  finishes and the node shuts down at once). While spinning, a signal ends the spin. During shutdown,
  and after ``run_node`` returns until the process exits, further signals are ignored: a second
  Ctrl-C never prints a KeyboardInterrupt traceback nor cuts the clean-up short.
* A configuration error while building the node (:class:`apo_core.errors.ApoError`, and ``OSError``
  / ``ValueError`` from a settings file or directory) -> ``"<program>: error: <message>"`` on stderr,
  exit code 2, no traceback. Any other exception is a bug and keeps its traceback (exit code 1),
  unless a stop signal arrived during the build: then it is reported in one line and the exit code is 0.
* Spins a single-threaded executor (or a multi-threaded one with ``num_threads`` > 1) with
  ``spin_once`` and a timeout, never a blocking ``spin()``, so a node without timers still sees the
  signal; ``should_stop(node)`` ends the spin when true (the keyboard teleop's quit key).
* Shutdown (logged as "shutting down"), in this order: ``shutdown(node)`` if given, else ``node.on_shutdown()`` if the node has
  one (a failure there is logged, not raised); the executor is shut down, the node destroyed, the
  context shut down. Exit code 0.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback

#: exceptions of a node's construction reported as a configuration error (exit code 2)
CONFIG_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError)


def _config_errors() -> tuple[type[BaseException], ...]:
    from apo_core.errors import ApoError

    return (ApoError, *CONFIG_ERRORS)


def build_or_destroy(node, build) -> None:
    """Finish a node's construction with ``build()``; if it raises, destroy the half-built node (its
    publishers, services, timers) before the error propagates to run_node or the test that built it."""
    try:
        build()
    except BaseException:
        node.destroy_node()
        raise


def run_node(make_node, program: str, args=None, *, num_threads: int = 1, should_stop=None,
             shutdown=None, interrupt_build: bool = True) -> int:
    """Init, build the node with ``make_node()``, spin until a signal, shut down; returns the exit code."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    phase = {"name": "build"}

    def _on_signal(signum, _frame):
        stop.set()
        if phase["name"] == "build" and interrupt_build:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            rclpy.init(args=args if args is not None else sys.argv,
                       signal_handler_options=SignalHandlerOptions.NO)
        except KeyboardInterrupt:
            return 0
        except Exception as exc:  # malformed --ros-args (e.g. "-p name:=" without a value)
            print(f"{program}: error: invalid ROS arguments: {exc}", file=sys.stderr, flush=True)
            return 2
        node = None
        try:
            node = make_node()
            phase["name"] = "spin"
        except KeyboardInterrupt:
            phase["name"] = "shutdown"
            if node is None:
                rclpy.try_shutdown()
                return 0
        except _config_errors() as exc:
            phase["name"] = "shutdown"
            print(f"{program}: error: {exc}", file=sys.stderr, flush=True)
            rclpy.try_shutdown()
            return 2
        except BaseException as exc:
            phase["name"] = "shutdown"
            if not rclpy.ok():  # the context went away while building: not an error
                return 0
            if stop.is_set():
                # A signal to the process group (Ctrl-C, launch's SIGTERM) also reaches helpers the
                # build waits on; their failure is the stop that was asked for, not a bug.
                print(f"{program}: stopped while starting ({type(exc).__name__}: {exc})", file=sys.stderr,
                      flush=True)
                rclpy.try_shutdown()
                return 0
            rclpy.try_shutdown()
            raise
        return _spin_and_shut_down(node, rclpy, stop, phase, num_threads, should_stop, shutdown,
                                   ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor)
    finally:
        # After a stop signal the process is on its way out: keep ignoring signals until it exits (launch
        # forwards the terminal's Ctrl-C as a second SIGINT, which may land after this returns).
        for sig, handler in previous.items():
            try:
                signal.signal(sig, signal.SIG_IGN if stop.is_set() else handler)
            except (TypeError, ValueError):
                pass


def _spin_and_shut_down(node, rclpy, stop, phase, num_threads, should_stop, shutdown,
                        ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor) -> int:
    executor = MultiThreadedExecutor(num_threads=num_threads) if num_threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok() and not (should_stop is not None and should_stop(node)):
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        phase["name"] = "shutdown"  # from here on a signal is ignored
        try:
            node.get_logger().info("shutting down")
        except Exception:
            pass
        close = shutdown if shutdown is not None else _method(node, "on_shutdown")
        if close is not None:
            try:
                close(node) if shutdown is not None else close()
            except Exception:
                print(f"{node.get_name()}: error during shutdown:\n{traceback.format_exc()}",
                      file=sys.stderr, flush=True)
        executor.shutdown(timeout_sec=2.0)
        try:
            node.destroy_node()
        except Exception:
            pass
        rclpy.try_shutdown()
    return 0


def _method(node, name: str):
    attr = getattr(node, name, None)
    return attr if callable(attr) else None
