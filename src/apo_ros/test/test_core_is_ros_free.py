"""apo_core is ROS-free: importing every one of its modules imports no rclpy."""

import subprocess
import sys

CHECK = r"""
import importlib, pkgutil, sys
import apo_core
failed = []
for info in pkgutil.walk_packages(apo_core.__path__, "apo_core."):
    try:
        importlib.import_module(info.name)
    except ImportError as exc:  # an optional dependency missing is not what this test is about
        if "rclpy" in str(exc):
            raise
        failed.append(info.name)
ros = sorted(m for m in sys.modules if m == "rclpy" or m.startswith(("rclpy.", "rcl_interfaces")))
print("ROS:" + ",".join(ros))
"""


def test_importing_every_apo_core_module_imports_no_rclpy():
    proc = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ROS:\n" in proc.stdout or proc.stdout.strip().endswith("ROS:"), proc.stdout
