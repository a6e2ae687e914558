"""Bringup of the APO-ROS graph: the graph file, ros2 launch integration and the apo command."""
