"""Retraining jobs of the deploy-optimize loop (ROS-free); the ROS service lives in ``retrain_node``."""
