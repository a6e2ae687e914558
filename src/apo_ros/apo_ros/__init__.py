"""apo_ros: the ROS layer every APO-ROS node shares (apo_core stays ROS-free).

* :mod:`apo_ros.qos` -- QoS profiles of the graph's topics (``topic_qos``, ``qos_profile``, ``qos_for``)
* :mod:`apo_ros.params` -- node parameters -> a strict config dataclass (``load_parameters``),
  ``CallbackGuard`` (no request or message kills a node)
* :mod:`apo_ros.node` -- ``run_node``: the one entry point body (signals, executor, exit codes);
  ``build_or_destroy``: a node whose construction fails is destroyed before the error propagates
* :mod:`apo_ros.graph` -- ``RosGraph``: nodes in-process with callback errors reported
* :mod:`apo_ros.testing` -- node subprocesses for tests (``start_node_process``, ``stop_process``)

Submodules import rclpy lazily; import them directly (``from apo_ros.qos import topic_qos``).
"""
