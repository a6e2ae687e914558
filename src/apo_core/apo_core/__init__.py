"""ROS-free core of APO-ROS, shared by the nodes and the trainer."""

__version__ = "0.1.0"
