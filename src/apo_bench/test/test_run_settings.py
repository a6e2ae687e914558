"""A rerun into the same output directory may add cells but not change what a finished cell computed."""

import json

import pytest

from apo_bench.cli import main
from apo_bench.run_settings import FILE_NAME, check_and_record
from apo_bench.settings import load_bench_settings
from apo_core.errors import ConfigError


def _settings(**overrides):
    return load_bench_settings("quick", None, overrides)


def test_the_first_run_records_its_settings_and_the_same_rerun_passes(tmp_path):
    check_and_record(tmp_path, _settings())
    recorded = json.loads((tmp_path / FILE_NAME).read_text())
    assert recorded["bc.lr"] == _settings().bc.lr
    assert recorded["eval.seed_base"] == 70000
    check_and_record(tmp_path, _settings())


def test_more_cells_and_another_speed_are_allowed(tmp_path):
    check_and_record(tmp_path, _settings())
    check_and_record(tmp_path, _settings(tasks=["Lift", "Stack"], train_seeds=[0, 1],
                                         lifelong={"methods": ["apo"]}, eval={"workers": 1}, torch_threads=2))
    assert json.loads((tmp_path / FILE_NAME).read_text())["tasks"] == ["Lift", "Stack"]


@pytest.mark.parametrize("overrides, key", [
    ({"bc": {"lr": 0.5}}, "bc.lr"),
    ({"eval": {"seed_base": 90000}}, "eval.seed_base"),
    ({"camera": "agentview"}, "camera"),
    ({"methods": {"apo": {"loss": "apo", "overrides": {"optim": {"lr": 0.1}}}}},
     "methods.apo.overrides.optim.lr"),
])
def test_a_rerun_that_would_mix_settings_is_refused_with_the_key_named(tmp_path, overrides, key):
    check_and_record(tmp_path, _settings())
    before = (tmp_path / FILE_NAME).read_text()
    with pytest.raises(ConfigError, match=rf"{key}: .* there, .* now.*new --out"):
        check_and_record(tmp_path, _settings(**overrides))
    assert (tmp_path / FILE_NAME).read_text() == before  # the record is kept as it was


def test_the_command_refuses_before_computing_anything(tmp_path, capsys):
    check_and_record(tmp_path, _settings())
    rc = main(["--preset", "quick", "--out", str(tmp_path), "--set", "bc.lr=0.5", "--quiet"])
    assert rc == 2
    assert "bc.lr: " in capsys.readouterr().err
    assert not (tmp_path / "cells").exists() or not any((tmp_path / "cells").iterdir())


def test_a_corrupt_record_is_a_clear_error(tmp_path):
    (tmp_path / FILE_NAME).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        check_and_record(tmp_path, _settings())


def test_a_per_architecture_override_records_as_what_the_run_computes(tmp_path):
    by_arch = {"chunked_vla": {"optim": {"lr": 1e-4}}}
    chunked = {"policy_architecture": "chunked_vla"}
    # Set through overrides_by_architecture or through overrides: the same cells, so the same record.
    check_and_record(tmp_path, _settings(**chunked, methods={"apo": {"loss": "apo", "overrides": {
        "optim": {"lr": 1e-4}, "train": {"max_steps": 10}}}}))
    check_and_record(tmp_path, _settings(**chunked, methods={"apo": {"loss": "apo", "overrides": {
        "optim": {"lr": 3e-4}, "train": {"max_steps": 10}}, "overrides_by_architecture": by_arch}}))
    recorded = json.loads((tmp_path / FILE_NAME).read_text())
    assert recorded["methods.apo.overrides.optim.lr"] == 1e-4
    assert not any("overrides_by_architecture" in key for key in recorded)
    # Another rate for the chunked VLA would mix settings.
    with pytest.raises(ConfigError, match=r"methods.apo.overrides.optim.lr: 0.0001 there, 0.0002 now"):
        check_and_record(tmp_path, _settings(**chunked, methods={"apo": {"loss": "apo", "overrides": {
            "train": {"max_steps": 10}}, "overrides_by_architecture": {"chunked_vla": {"optim": {"lr": 2e-4}}}}}))


def test_an_entry_for_another_architecture_does_not_lock_an_older_run_out(tmp_path):
    check_and_record(tmp_path, _settings())
    check_and_record(tmp_path, _settings(methods={"apo": {"loss": "apo", "overrides": {
        "optim": {"lr": 0.0003}, "train": {"max_steps": 10}},
        "overrides_by_architecture": {"chunked_vla": {"optim": {"lr": 1e-4}}}}}))
