"""Fixtures shared by the retrain tests of apo_trainer (the manager) and apo_retrain (the node over DDS):
a model store with one version and one real episode bag, and the hostile requests both must refuse."""

from __future__ import annotations

import os

import numpy as np

from apo_core.model_store import ModelStore
from apo_core.normalization import ActionStats
from apo_trainer.bag_reader_samples import SampleEpisode, sample_action, write_sample_bag
from apo_trainer.testing import tiny_policy

AUTONOMOUS, HUMAN = 1, 2
JOB = "job-20250101-120000-abcdef"  # well formed, never run


def make_world(tmp_path, **settings):
    """A store with v0001, one real episode bag, and directories beside them that no request may reach.

    Returns (store, retrain settings as a dict); ``settings`` are added to the latter."""
    actions = np.stack([sample_action(i) for i in range(50)])
    store = ModelStore(tmp_path / "models")
    store.add(tiny_policy(ActionStats.from_actions(actions), state_dim=9).save(tmp_path / "base"))
    write_sample_bag(tmp_path / "bags", SampleEpisode("ep0", [AUTONOMOUS] * 8 + [HUMAN] * 4, image_size=(16, 16)))
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "bags" / "link_out")  # a symlink out of bags_dir
    (tmp_path / "evilver").mkdir()  # what versions/../../evilver names
    cfg = {"work_dir": str(tmp_path / "work"), "bags_dir": str(tmp_path / "bags"), "model_store": str(store.root),
           "defaults": {"steps": 3}, "eval": {"heldout_every": 0}, **settings}
    return store, cfg


def hostile_retrain_requests(tmp_path):
    """(request fields, words the refusal must contain); dry_run everywhere so nothing trains if one got through."""
    return [
        ({"steps": 2**31 - 1}, ["steps", "1000000"]),
        ({"steps": -1}, ["steps", "1000000"]),
        ({"k": 2**31 - 1}, ["k_window", "1000"]),
        ({"k": -5}, ["k_window", "-1"]),
        ({"loss": "ppo"}, ["loss", "ppo"]),
        ({"loss": "x" * 100_000}, ["loss"]),
        ({"episodes": ["../outside"]}, ["episodes", "../outside"]),
        ({"episodes": ["../../x"]}, ["episodes", "../../x"]),
        ({"episodes": [str(tmp_path / "outside")]}, ["episodes", "not a plain name"]),
        ({"episodes": ["link_out"]}, ["episodes", "outside"]),
        ({"episodes": ["x" * 300]}, ["episodes", "300 characters"]),
        ({"episodes": [""]}, ["episodes", "empty"]),
        ({"episodes": ["ep0"] * 20_000}, ["episodes", "20000", "10000"]),
        ({"episodes": ["nope"]}, ["episodes", "not found", "nope"]),
    ]
