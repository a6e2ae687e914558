from dataclasses import dataclass, field
from typing import Literal

import pytest

from apo_core.config import flatten_dotted, load_config, nest_dotted, parse_dotted_overrides, read_yaml
from apo_core.errors import ConfigError, MissingPathError


@dataclass
class Inner:
    lr: float = 5e-5
    steps: int = 100


@dataclass
class Outer:
    loss: Literal["apo", "kto", "bc"] = "apo"
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    note: str | None = None


def test_defaults_and_nested_values():
    cfg = load_config(Outer, {"inner": {"lr": 1}, "tags": ["a"]})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float) and cfg.inner.steps == 100
    assert cfg.tags == ["a"] and cfg.loss == "apo"


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"'inner\.setps'.*did you mean 'steps'"):
        load_config(Outer, {"inner": {"setps": 3}})
    with pytest.raises(ConfigError, match="'los'"):
        load_config(Outer, {"los": "apo"})


@pytest.mark.parametrize(
    "data, match",
    [
        ({"inner": {"steps": "ten"}}, "inner.steps: expected an integer"),
        ({"inner": {"steps": True}}, "inner.steps: expected an integer"),
        ({"inner": {"lr": float("nan")}}, "NaN"),
        ({"loss": "ppo"}, "loss: 'ppo' is not one of"),
        ({"inner": 3}, "inner: expected a mapping"),
        ({"tags": "a"}, "tags: expected a list"),
    ],
)
def test_wrong_types_are_named(data, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Outer, data)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(MissingPathError, match="nope.yaml"):
        read_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_yaml(bad)


def test_dotted_overrides():
    assert parse_dotted_overrides(["inner.lr=0.1", "loss=kto"]) == {"inner": {"lr": 0.1}, "loss": "kto"}
    with pytest.raises(ConfigError):
        parse_dotted_overrides(["oops"])


def test_flatten_dotted_inverts_nest_dotted_and_keeps_named_sections_whole():
    nested = {"train": {"lr": 1e-4, "data": {"k": 10}}, "shares": {"human": 0.25}, "loss": "apo"}
    flat = flatten_dotted(nested)
    assert flat == {"train.lr": 1e-4, "train.data.k": 10, "shares.human": 0.25, "loss": "apo"}
    assert nest_dotted(flat) == nested
    assert flatten_dotted(nested, {"shares"})["shares"] == {"human": 0.25}
