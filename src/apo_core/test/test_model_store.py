import json
import os

import pytest

from apo_core.errors import MissingPathError
from apo_core.model_store import ModelStore, ModelStoreError, resolve_policy_dir
from apo_core.names import InvalidNameError


def _policy_dir(tmp_path, name, payload):
    d = tmp_path / name
    d.mkdir()
    (d / "apo_policy.json").write_text(json.dumps({"kind": "small_vla", "version": ""}))
    (d / "weights.bin").write_text(payload)
    return d


def test_add_promote_rollback(tmp_path):
    store = ModelStore(tmp_path / "store")
    assert store.versions() == [] and store.current_version() is None
    with pytest.raises(MissingPathError, match="no current version"):
        store.path()
    v1 = store.add(_policy_dir(tmp_path, "a", "one"))
    v2 = store.add(_policy_dir(tmp_path, "b", "two"))
    assert (v1, v2) == ("v0001", "v0002") and store.current_version() == "v0002"
    assert (store.path() / "weights.bin").read_text() == "two"
    assert json.loads((store.path() / "apo_policy.json").read_text())["version"] == "v0002"
    assert store.rollback() == "v0001" and store.current_version() == "v0001"
    with pytest.raises(ModelStoreError, match="no version before"):
        store.rollback()
    store.set_current("v0002")
    assert [h["action"] for h in store.history()] == ["add", "promote", "add", "promote", "rollback", "set_current"]
    # a candidate added without promotion is stored but not current
    v3 = store.add(_policy_dir(tmp_path, "c", "three"), make_current=False)
    assert v3 == "v0003" and store.current_version() == "v0002"


def test_unknown_version_and_paths(tmp_path):
    store = ModelStore(tmp_path / "store")
    store.add(_policy_dir(tmp_path, "a", "one"))
    with pytest.raises(MissingPathError, match="v0009"):
        store.path("v0009")
    with pytest.raises(MissingPathError, match="nothing"):
        store.add(tmp_path / "nothing")
    d, label = resolve_policy_dir(tmp_path / "store")
    assert label == "v0001" and d.name == "v0001"
    d, label = resolve_policy_dir(_policy_dir(tmp_path, "plain", "x"))
    assert label == "plain"
    with pytest.raises(ModelStoreError):
        resolve_policy_dir(tmp_path / "plain", "v0001")


def test_leftover_temporary_directory_is_invisible(tmp_path):
    store = ModelStore(tmp_path / "store")
    store.add(_policy_dir(tmp_path, "a", "one"))
    (store.versions_dir / ".tmp-v0002-123").mkdir()  # a promotion killed mid-copy
    assert store.versions() == ["v0001"] and store.next_version() == "v0002"


def _store_with_two(tmp_path):
    store = ModelStore(tmp_path / "store")
    store.add(_policy_dir(tmp_path, "a", "one"))
    store.add(_policy_dir(tmp_path, "b", "two"))
    store.set_current("v0001")
    return store


def _current_state(store):
    return os.readlink(store.current_link), store.history()


@pytest.mark.parametrize("bad", ["../../evilver", "../x", "/tmp", "v0001/../v0002", "..", "", "V0001", "v1",
                                 "v0002\n", "a" * 300, None])
def test_traversal_and_malformed_versions_are_refused(tmp_path, bad):
    store = _store_with_two(tmp_path)
    evil = tmp_path / "evilver"  # what ../../evilver would reach from versions/
    evil.mkdir()
    (tmp_path / "store" / "x").mkdir()  # what ../x would reach
    before = _current_state(store)
    for call in (store.set_current, store.rollback, store.path):
        if call is not store.set_current and bad in ("", None):
            continue  # "" / None mean "current" / "the one before" for path and rollback
        with pytest.raises(InvalidNameError, match="model version"):
            call(bad)
        assert _current_state(store) == before, f"{call.__name__}({bad!r}) touched current"
    assert store.current_version() == "v0001"


def test_rollback_and_set_current_traversal_leave_current_untouched(tmp_path):
    store = _store_with_two(tmp_path)
    (tmp_path / "evilver").mkdir()
    with pytest.raises(InvalidNameError, match="evilver"):
        store.rollback("../../evilver")
    with pytest.raises(InvalidNameError, match=r"\.\./x"):
        store.set_current("../x")
    assert os.readlink(store.current_link) == "versions/v0001" and store.current_version() == "v0001"
    assert [h["action"] for h in store.history()] == ["add", "promote", "add", "promote", "set_current"]
    assert store.rollback("v0002") == "v0002" and store.current_version() == "v0002"


def test_symlinked_version_outside_the_store_is_refused(tmp_path):
    store = _store_with_two(tmp_path)
    outside = _policy_dir(tmp_path, "outside", "evil")
    (store.versions_dir / "v0003").symlink_to(outside)
    with pytest.raises(InvalidNameError, match="outside"):
        store.path("v0003")
    with pytest.raises(InvalidNameError, match="outside"):
        store.set_current("v0003")
    assert store.current_version() == "v0001"


@pytest.mark.parametrize("target", ["../evilver", "/tmp", "versions/../../evilver/v0001", "versions/../x"])
def test_current_link_pointing_outside_versions_is_an_error(tmp_path, target):
    store = _store_with_two(tmp_path)
    (tmp_path / "evilver" / "v0001").mkdir(parents=True)
    store.current_link.unlink()
    store.current_link.symlink_to(target)
    with pytest.raises(ModelStoreError, match="current"):
        store.current_version()
    with pytest.raises(ModelStoreError, match="current"):
        store.path()
    with pytest.raises(ModelStoreError):
        resolve_policy_dir(store.root)
    store.set_current("v0002")  # an explicit, valid version repairs it
    assert store.current_version() == "v0002"
