"""The /apo/retrain service node of APO-ROS: ROS plumbing over the ROS-free ``apo_trainer.retrain`` jobs."""
