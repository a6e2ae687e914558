import json

import pytest

from apo_core.errors import MissingPathError
from apo_core.model_store import ModelStore, ModelStoreError, resolve_policy_dir


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
