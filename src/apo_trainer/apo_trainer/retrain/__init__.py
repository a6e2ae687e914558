"""Retraining jobs of the deploy-optimize loop (ROS-free); the ROS service is ``apo_retrain.retrain_node``."""
