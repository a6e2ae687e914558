"""Launch support of the APO-ROS graph: the graph file, ros2 launch integration, the process runner and session.

The ``apo`` command that drives it lives in apo_cli.
"""
