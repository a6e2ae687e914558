"""``apo demo --policy-architecture chunked_vla``: the command line reaches the demo's settings and its base BC
trains a chunked VLA into the model store (real simulator demos, real trainer, tiny budgets)."""

import json

import pytest

from apo_cli.cli import build_parser
from apo_cli.demo import DemoSettings, collect, settings_from_args, train_base
from apo_core.errors import ConfigError
from apo_core.model_store import ModelStore
from apo_core.policy import load_policy
from apo_core.policy.chunked_vla import ChunkedVLAPolicy

pytestmark = pytest.mark.sim


def test_the_command_line_chooses_the_architecture_and_the_default_is_the_small_vla():
    args = build_parser().parse_args(["demo", "--quick", "--policy-architecture", "chunked_vla", "--chunk-horizon", "4"])
    s = settings_from_args(args)
    assert (s.policy_architecture, s.chunk_horizon, s.bc_steps) == ("chunked_vla", 4, 300)  # quick preset kept
    default = settings_from_args(build_parser().parse_args(["demo"]))
    assert (default.policy_architecture, default.chunk_horizon) == ("small_vla", 8)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--policy-architecture", "pi0"])
    with pytest.raises(ConfigError, match="chunk_horizon must be an integer >= 1, got 0"):
        settings_from_args(build_parser().parse_args(["demo", "--policy-architecture", "chunked_vla",
                                                      "--chunk-horizon", "0"]))
    with pytest.raises(ConfigError, match="policy_architecture: unknown 'pi0'"):
        DemoSettings(policy_architecture="pi0")


def test_the_demo_base_is_a_chunked_vla_and_a_store_of_another_kind_is_refused(tmp_path):
    out = tmp_path / "demo"
    settings = DemoSettings(out=str(out), demo_episodes=1, bc_steps=2, bc_batch=4, image_size=32,
                            policy_architecture="chunked_vla", chunk_horizon=4)
    expert = collect(settings, out)
    assert train_base(settings, out, expert) == "v0001"
    store = ModelStore(out / "models")
    meta = json.loads((store.path("v0001") / "apo_policy.json").read_text())
    assert (meta["kind"], meta["horizon"]) == ("chunked_vla", 4)
    policy = load_policy(store.path("v0001"))
    assert isinstance(policy, ChunkedVLAPolicy) and policy.executor.replan_every == 2
    assert train_base(settings, out, expert) == "v0001"  # already there: kept, not retrained
    small = DemoSettings(out=str(out), demo_episodes=1, bc_steps=2, bc_batch=4, image_size=32)
    with pytest.raises(ConfigError, match="already holds a chunked_vla policy .v0001.; this run asks for small_vla"):
        train_base(small, out, expert)
