"""The VLA policy node of APO-ROS."""
