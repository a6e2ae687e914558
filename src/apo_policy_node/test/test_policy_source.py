"""Where the policy node may load from (ROS-free): versions of its model_path only, never a path."""

import json
import shutil

import pytest

from apo_core.config import load_config
from apo_core.errors import ConfigError, MissingPathError
from apo_core.model_store import ModelStore
from apo_core.names import InvalidNameError
from apo_core.policy.small_vla import SmallVLAPolicy
from apo_policy_node.config import PolicyNodeConfig
from apo_policy_node.policy_source import PolicyLoadError, PolicySource

TINY = dict(image_size=32, text_vocab_size=320, vision={"embedding_size": 8, "hidden_sizes": [8, 16, 16]},
            text={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "num_key_value_heads": 2})


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    return SmallVLAPolicy.create(state_dim=9, seed=1, **TINY).save(root / "plain")


def test_single_policy_directory_can_only_be_reloaded(policy_dir):
    source = PolicySource(policy_dir)
    assert not source.is_store
    assert source.resolve("") == (policy_dir, "plain")
    assert source.load("plain").version == "plain"
    for other in ("v0001", "../plain", str(policy_dir), "x" * 300):
        with pytest.raises(InvalidNameError, match="single policy directory") as err:
            source.resolve(other)
        assert len(str(err.value)) < 400  # a huge request is not echoed in full


def test_store_versions_only(tmp_path, policy_dir):
    store = ModelStore(tmp_path / "models")
    store.add(policy_dir)
    source = PolicySource(store.root)
    assert source.is_store and source.resolve("") == (store.path("v0001"), "v0001")
    assert source.load("v0001").version == "v0001"
    for bad in ("../../x", str(policy_dir), "/tmp", "v0001/..", "x" * 300):
        with pytest.raises(InvalidNameError):
            source.resolve(bad)
    with pytest.raises(MissingPathError, match="v9999"):
        source.resolve("v9999")


def test_missing_or_empty_model_path_is_a_store_waiting_for_its_first_version(tmp_path, policy_dir):
    for root in (tmp_path / "nowhere", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        source = PolicySource(root)
        assert source.is_store and source.current_version() is None
        with pytest.raises(MissingPathError, match="no current version"):
            source.load()
        with pytest.raises(MissingPathError, match="v0001"):
            source.load("v0001")
        # filled later (what `apo models import` does): the same source now finds and loads it
        ModelStore(root).add(policy_dir)
        assert source.current_version() == "v0001" and source.load().version == "v0001"


def test_unusable_model_path(tmp_path, policy_dir):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MissingPathError, match="not a directory"):
        PolicySource(tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a policy")
    with pytest.raises(MissingPathError, match="holds no APO policy"):
        PolicySource(tmp_path / "other").load()
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "apo_policy.json").write_text("{not json")
    with pytest.raises(ConfigError, match="apo_policy.json"):
        PolicySource(bad).load()
    (bad / "apo_policy.json").write_text(json.dumps({"kind": "small_vla", "version": ""}))
    with pytest.raises(MissingPathError, match="config.json"):
        PolicySource(bad).load()
    garbled = tmp_path / "garbled"
    shutil.copytree(policy_dir, garbled)
    (garbled / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(PolicyLoadError, match=str(garbled)):  # any load failure: one error naming the directory
        PolicySource(garbled).load()


def test_config_is_strict():
    assert load_config(PolicyNodeConfig, {"model_path": "/m"}).trust_remote_code is False
    with pytest.raises(ConfigError, match="model_path"):
        load_config(PolicyNodeConfig, {})
    with pytest.raises(ConfigError, match="modle_path"):
        load_config(PolicyNodeConfig, {"modle_path": "/m"})
    with pytest.raises(ConfigError, match="num_threads"):
        load_config(PolicyNodeConfig, {"model_path": "/m", "num_threads": 0})
    with pytest.raises(ConfigError, match="max_state_age_s"):
        load_config(PolicyNodeConfig, {"model_path": "/m", "max_state_age_s": -1.0})
    with pytest.raises(ConfigError, match="store_poll_s"):
        load_config(PolicyNodeConfig, {"model_path": "/m", "store_poll_s": 0.0})
    with pytest.raises(ConfigError, match="trust_remote_code"):
        load_config(PolicyNodeConfig, {"model_path": "/m", "trust_remote_code": "yes"})
    assert load_config(PolicyNodeConfig, {"model_path": "/m", "max_state_age_s": 2}).max_state_age_s == 2.0
