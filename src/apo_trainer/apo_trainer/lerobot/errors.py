"""The one error the LeRobot export raises on purpose."""

from apo_core.errors import ApoError


class LeRobotExportError(ApoError, ValueError):
    """The export cannot go ahead (wrong output directory, mismatching features, ...)."""
