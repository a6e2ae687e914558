"""The one check for every name that a request or a command line turns into a path.

Model versions, retrain job ids, episode (bag) names and dataset names arrive from service requests
and CLIs. Each must be a plain name (no separator, no leading dot, bounded length) and, once joined
to its root directory, must resolve inside that root. :func:`child_path` does both; every service
and CLI that takes such a name calls it, so a traversal like ``../../x`` or an absolute path is
refused in one place with one message format.
"""

from __future__ import annotations

import re
from pathlib import Path

from apo_core.errors import ApoError

MAX_NAME_LENGTH = 128
# A plain file name: letters, digits, '.', '_', '-'; starts with a letter or digit (so never '.'/'..').
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VERSION_RE = re.compile(r"^v(\d{4,})$")
JOB_ID_RE = re.compile(r"^job-\d{8}-\d{6}-[0-9a-f]{6}$")


class InvalidNameError(ApoError, ValueError):
    """A name that would become a path is malformed or escapes its root directory."""


def check_name(value, kind: str, pattern: re.Pattern | None = None, max_length: int = MAX_NAME_LENGTH) -> str:
    """``value`` if it is a valid ``kind`` name (plain name, optionally matching ``pattern``)."""
    if not isinstance(value, str):
        raise InvalidNameError(f"{kind} must be a string, got {type(value).__name__}")
    shown = value if len(value) <= 40 else value[:40] + "..."
    if not value:
        raise InvalidNameError(f"{kind} is empty")
    if len(value) > max_length:
        raise InvalidNameError(f"{kind} {shown!r} is {len(value)} characters long (at most {max_length})")
    if not NAME_RE.fullmatch(value):
        raise InvalidNameError(f"{kind} {shown!r} is not a plain name: use letters, digits, '.', '_' and '-', "
                               "starting with a letter or digit (no '/', no '..')")
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidNameError(f"{kind} {shown!r} does not match the expected form {pattern.pattern}")
    return value


def child_path(root, name, kind: str, pattern: re.Pattern | None = None, must_exist: bool = False) -> Path:
    """``root / name`` for a valid ``name``, checked to resolve inside ``root`` (symlinks followed)."""
    check_name(name, kind, pattern)
    root = Path(root)
    path = root / name
    resolved_root = root.resolve()
    resolved = path.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        raise InvalidNameError(f"{kind} {name!r} resolves to {resolved}, outside {resolved_root}")
    if must_exist and not path.exists():
        raise InvalidNameError(f"{kind} {name!r} not found in {root}")
    return path
