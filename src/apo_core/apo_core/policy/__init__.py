"""VLA policies: one interface (``VLAPolicy``), the small embedded model, and the OpenVLA loader."""

from apo_core.policy.base import (
    ActionMetrics,
    Observation,
    VLAPolicy,
    action_token_metrics,
    cameras_conflict,
    check_camera,
)
from apo_core.policy.factory import load_policy, read_policy_meta

__all__ = ["ActionMetrics", "Observation", "VLAPolicy", "action_token_metrics", "cameras_conflict", "check_camera",
           "load_policy", "read_policy_meta"]
