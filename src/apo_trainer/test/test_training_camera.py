"""A trained policy remembers the camera its episodes came from, and nothing mixes two cameras.

Simulator demos name their camera (episode attribute ``camera``); the trainer refuses episodes of two
cameras in one run and a starting policy of another camera than the data, and writes the camera into
the trained policy's apo_policy.json, where the evaluators and the policy node read it.
"""

import json
import shutil

import h5py
import pytest

from apo_core.policy import load_policy
from apo_trainer.config import BC_PRESET
from apo_trainer.data import StepDataset, TrainingDataError
from apo_trainer.testing import tiny_train_config, tiny_training_data
from apo_trainer.train import train


def _name_camera(path, camera: str, only_first: bool = False) -> None:
    """What apo_sim.demos writes on each episode it records."""
    with h5py.File(path, "r+") as f:
        for i, name in enumerate(sorted(f["data"])):
            if only_first and i > 0:
                break
            f["data"][name].attrs["camera"] = camera


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_training_data(tmp_path_factory.mktemp("camera"), n_expert=3, n_interactive=2)


def test_the_trained_policy_records_the_camera_of_its_demos_and_keeps_it_through_retraining(data, tmp_path):
    wrist = tmp_path / "wrist.hdf5"
    shutil.copy(data.expert, wrist)
    _name_camera(wrist, "robot0_eye_in_hand")
    assert StepDataset(wrist).camera == "robot0_eye_in_hand"
    assert StepDataset(data.inter).camera is None  # converted bags name none

    base = train(tiny_train_config(tmp_path / "bc", wrist, loss="bc", max_steps=2), preset=BC_PRESET).policy_dir
    assert json.loads((base / "apo_policy.json").read_text())["camera"] == "robot0_eye_in_hand"
    assert load_policy(base).camera == "robot0_eye_in_hand"

    # a retraining round on interactive data (no camera named) keeps the base's camera
    retrained = train(tiny_train_config(tmp_path / "apo", [data.inter], policy_path=base, max_steps=2)).policy_dir
    assert load_policy(retrained).camera == "robot0_eye_in_hand"

    # a policy trained on data that names no camera records none (and is never refused for it)
    plain = train(tiny_train_config(tmp_path / "plain", data.expert, loss="bc", max_steps=2),
                  preset=BC_PRESET).policy_dir
    assert "camera" not in json.loads((plain / "apo_policy.json").read_text())
    assert load_policy(plain).camera is None


def test_episodes_of_two_cameras_or_a_policy_of_another_camera_are_refused(data, tmp_path):
    mixed = tmp_path / "mixed.hdf5"
    shutil.copy(data.expert, mixed)
    _name_camera(mixed, "agentview")
    _name_camera(mixed, "robot0_eye_in_hand", only_first=True)
    with pytest.raises(TrainingDataError, match="different cameras") as err:
        StepDataset(mixed)
    assert "'agentview'" in str(err.value) and "'robot0_eye_in_hand'" in str(err.value)

    agentview = tmp_path / "agentview.hdf5"
    shutil.copy(data.expert, agentview)
    _name_camera(agentview, "agentview")
    wrist_policy = tmp_path / "wrist_policy"
    shutil.copytree(data.start, wrist_policy)
    meta = json.loads((wrist_policy / "apo_policy.json").read_text())
    (wrist_policy / "apo_policy.json").write_text(json.dumps({**meta, "camera": "robot0_eye_in_hand"}))
    with pytest.raises(TrainingDataError, match="trained on camera 'robot0_eye_in_hand'.*'agentview'"):
        train(tiny_train_config(tmp_path / "refused", [agentview, data.inter], policy_path=wrist_policy,
                                max_steps=2))
    assert not (tmp_path / "refused" / "policy").exists()
