"""Where a bag's files are and what its metadata / the recorder's journal say (ROS-free)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import yaml

from apo_core.bag_contract import JOURNAL_NAME
from apo_core.errors import MissingPathError


def mcap_files(bag_dir) -> list[Path]:
    """The MCAP files of a bag directory in split order (``x_0.mcap``, ``x_1.mcap``, ...)."""

    def key(p: Path):
        stem = p.stem
        tail = stem.rsplit("_", 1)[-1]
        return (int(tail) if tail.isdigit() else -1, stem)

    return sorted(Path(bag_dir).glob("*.mcap"), key=key)


def is_bag_dir(path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / "metadata.yaml").is_file() or bool(mcap_files(path)))


def find_bags(bags_dir) -> list[Path]:
    """Episode bag directories directly under ``bags_dir`` (sorted by name)."""
    bags_dir = Path(bags_dir)
    if not bags_dir.is_dir():
        raise MissingPathError(f"bags directory not found: {bags_dir}")
    return sorted(p for p in bags_dir.iterdir() if is_bag_dir(p))


def bag_bytes(bag_dir) -> int:
    """Size of a bag's storage files in bytes."""
    return sum(p.stat().st_size for p in mcap_files(bag_dir))


def load_metadata(bag_dir) -> dict | None:
    """The ``rosbag2_bagfile_information`` mapping of ``metadata.yaml``, or None if absent/unreadable."""
    path = Path(bag_dir) / "metadata.yaml"
    try:
        data = yaml_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
    return info if isinstance(info, dict) else None


def read_custom_data(bag_dir) -> dict[str, str]:
    """``custom_data`` of ``metadata.yaml`` as strings (empty when the file is missing)."""
    info = load_metadata(bag_dir) or {}
    return strings_of(info.get("custom_data"))


# The recorder's journal (apo_core.bag_contract.JOURNAL_NAME, imported at the top): present while a bag
# is being written, left behind by a killed recorder. Read as plain YAML.


def read_journal(bag_dir) -> dict | None:
    """The recorder's journal of an unfinished bag (custom_data, pid, hostname), or None."""
    try:
        data = yaml_load((Path(bag_dir) / JOURNAL_NAME).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def recording_in_progress(bag_dir) -> bool | None:
    """True if the recorder that writes this bag is alive (journal, no metadata.yaml, its pid runs on
    this host); False if it is finished or its writer is gone; None when it cannot be told (no
    journal, or another host) - the caller then judges by the files' age."""
    bag_dir = Path(bag_dir)
    if (bag_dir / "metadata.yaml").is_file():
        return False
    journal = read_journal(bag_dir)
    if journal is None or journal.get("hostname") not in (None, socket.gethostname()):
        return None
    try:
        pid = int(journal.get("pid"))
    except (TypeError, ValueError):
        return None
    return process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host can still be writing: it exists and is not a zombie (a killed,
    not yet reaped process writes nothing). Another user's process counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def yaml_load(text: str):
    """Safe YAML load, with libyaml when available (metadata.yaml is read for every bag)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def strings_of(custom) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}
