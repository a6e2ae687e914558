"""Test-wide isolation for ROS 2 and MuJoCo, applied before any test module imports rclpy.

Each pytest-xdist worker gets its own ROS_DOMAIN_ID so parallel graphs never see each other, DDS
discovery is kept on this machine, logs go to a temporary directory, and rendering is offscreen.
"""

import os
import sys
import tempfile


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(ch for ch in worker if ch.isdigit())
    return int(digits or 0)


# Domain ids 0..101 are valid for any participant count; keep clear of 0 (the default people use).
_base = int(os.environ.get("APO_TEST_DOMAIN_BASE", "40"))
os.environ["ROS_DOMAIN_ID"] = str(_base + _worker_index())
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="apo-roslog-"))
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
if not os.environ.get("AMENT_PREFIX_PATH"):
    os.environ["AMENT_PREFIX_PATH"] = sys.prefix  # the venv: apo_interfaces is installed into it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
