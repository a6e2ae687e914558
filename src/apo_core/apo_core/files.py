"""Durable file writes shared by the model store and the recorder: a file or directory reaches the disk
before the step that depends on it (a crash then leaves the old content or the new, never half of one)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a directory's fsync makes the names created or renamed in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> None:
    """Replace ``path`` with ``text`` atomically (write ``<name>.tmp`` beside it, then ``os.replace``);
    with ``fsync`` the data and the rename are on disk when this returns."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_path(path.parent)
