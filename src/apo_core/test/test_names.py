import os

import pytest

from apo_core.names import JOB_ID_RE, VERSION_RE, InvalidNameError, check_name, child_path

HOSTILE = ["", ".", "..", "../x", "../../evilver", "/etc", "a/b", "a\\b", " v0001", "v0001\n", "x" * 300,
           "-rf", ".hidden", "a b", "$(touch X)", "a;b", "\x00"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(name, tmp_path):
    with pytest.raises(InvalidNameError):
        child_path(tmp_path, name, "episode")


@pytest.mark.parametrize("value", [None, 3, b"v0001", ["v0001"]])
def test_non_strings_are_refused(value):
    with pytest.raises(InvalidNameError, match="must be a string"):
        check_name(value, "version")


def test_plain_names_pass(tmp_path):
    assert child_path(tmp_path, "ep-20261205-0001_a.b", "episode") == tmp_path / "ep-20261205-0001_a.b"
    assert check_name("v0012", "version", VERSION_RE) == "v0012"
    assert check_name("job-20261205-101010-abcdef", "job id", JOB_ID_RE)


def test_pattern_is_enforced():
    with pytest.raises(InvalidNameError, match="expected form"):
        check_name("v12", "version", VERSION_RE)
    with pytest.raises(InvalidNameError, match="expected form"):
        check_name("job-1", "job id", JOB_ID_RE)


def test_symlink_out_of_root_is_refused(tmp_path):
    root = tmp_path / "versions"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "v0001")
    with pytest.raises(InvalidNameError, match="outside"):
        child_path(root, "v0001", "version", VERSION_RE)


def test_must_exist(tmp_path):
    with pytest.raises(InvalidNameError, match="not found"):
        child_path(tmp_path, "v0001", "version", must_exist=True)
    (tmp_path / "v0001").mkdir()
    assert child_path(tmp_path, "v0001", "version", must_exist=True).is_dir()


def test_long_name_message_is_short():
    with pytest.raises(InvalidNameError) as info:
        check_name("a" * 300, "job id")
    assert len(str(info.value)) < 150
