"""Helpers for tests and benchmarks that run real rclpy nodes (imports rclpy lazily)."""
