"""apo_core.files (durable writes shared by the model store and the recorder) and apo_core.bags.process_alive
(whether a recorder named in a bag's journal can still be writing), on real files and real processes."""

import os
import subprocess
import sys

import pytest

from apo_core.bags.layout import process_alive
from apo_core.files import atomic_write_text, fsync_path


def test_atomic_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "journal.yaml"
    path.write_text("old")
    atomic_write_text(path, "new: 1\n")
    assert path.read_text() == "new: 1\n"
    atomic_write_text(path, "newer: 2\n", fsync=False)
    assert path.read_text() == "newer: 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.yaml"]


def test_fsync_of_a_missing_path_or_into_a_missing_directory_is_an_error(tmp_path):
    fsync_path(tmp_path)  # a directory is fine
    with pytest.raises(FileNotFoundError):
        fsync_path(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing" / "file.txt", "x")


def test_process_alive_for_running_zombie_and_reaped_processes():
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert process_alive(child.pid)
    finally:
        child.stdin.close()
    # Exited but not reaped: a zombie writes nothing. os.waitid with WNOWAIT waits without reaping it.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert not process_alive(child.pid)
    child.wait()
    assert not process_alive(child.pid)
