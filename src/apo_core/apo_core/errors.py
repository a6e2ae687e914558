"""Exceptions with messages meant for the person who has to fix the input."""


class ApoError(Exception):
    """Base class of every error APO-ROS raises on purpose."""


class ConfigError(ApoError, ValueError):
    """A configuration file or mapping is malformed (unknown key, wrong type, bad value)."""


class InvalidActionError(ApoError, ValueError):
    """An action (or action statistics) contains NaN/inf or has the wrong shape."""


class MissingPathError(ApoError, FileNotFoundError):
    """A file or directory the user pointed at does not exist; the message names the path."""
