"""APO-ROS trainer: the training side of APO, usable with no ROS install (never imports rclpy)."""
