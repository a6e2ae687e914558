"""Robot adapters: a real arm's standard ROS 2 interfaces <-> the APO-ROS robot topics (README, "Bring your robot")."""
