"""apo_core.bag_contract: the mirrored interface constants, the event -> outcome map, episode_facts,
and conversion and analysis agreeing on the outcome of the same recorded bags."""

import subprocess
import sys
from types import SimpleNamespace

import h5py
import pytest

from apo_core import bag_contract as bc
from apo_core import labels


# --------------------------------------------------------------------------------------------
# Mirrored constants == the generated interfaces (apo_interfaces is imported in the test only)
# --------------------------------------------------------------------------------------------
def _constants(cls, prefix):
    return {name[len(prefix):]: getattr(cls, name) for name in dir(cls) if name.startswith(prefix)}


def test_episode_event_codes_match_the_interface():
    from apo_interfaces.msg import EpisodeEvent

    generated = _constants(EpisodeEvent, "EVENT_")
    mirrored = {name[len("EVENT_"):]: getattr(bc, name) for name in dir(bc)
                if name.startswith("EVENT_") and isinstance(getattr(bc, name), int)}
    assert mirrored == generated
    assert set(bc.EVENT_CODES) == set(generated.values())
    assert {e.name: int(e) for e in bc.EpisodeEventCode} == generated


def test_action_source_codes_match_the_interface():
    from apo_interfaces.msg import ActionCommand

    generated = {n: getattr(ActionCommand, n) for n in dir(ActionCommand) if n.startswith("SOURCE_")}
    assert {n: getattr(bc, n) for n in generated} == generated
    assert set(bc.SOURCE_CODES) == set(generated.values())


def test_intervention_mode_codes_match_the_interface_and_are_defined_once():
    from apo_interfaces.msg import InterventionMode

    generated = _constants(InterventionMode, "MODE_")
    mirrored = {name[len("MODE_"):]: getattr(bc, name) for name in dir(bc) if name.startswith("MODE_")}
    assert mirrored == generated
    assert set(bc.MODES) == set(generated.values())
    assert bc.MODES is labels.MODES  # re-exported from apo_core.labels, not restated


def test_retrain_states_match_the_interface():
    from apo_interfaces.msg import RetrainStatus

    generated = {name.lower(): code for name, code in _constants(RetrainStatus, "STATE_").items()}
    assert bc.RETRAIN_STATES == generated
    assert bc.RETRAIN_ACTIVE_STATES < set(bc.RETRAIN_STATES)
    assert not bc.RETRAIN_ACTIVE_STATES & {"idle", "succeeded", "failed", "cancelled", "rejected"}


def test_old_modules_re_export_the_contract():
    from apo_intervention.episodes import Event
    from apo_recorder import contract
    from apo_trainer import analysis, bag_reader_samples, convert
    from apo_trainer.retrain import job

    assert Event is bc.EpisodeEventCode
    assert contract.JOURNAL_NAME == bc.JOURNAL_NAME
    assert contract.DEFAULT_TOPICS == bag_reader_samples.TOPIC_TYPES == bc.EPISODE_BAG_TOPICS
    assert contract.END_EVENT_OUTCOME is bc.END_EVENT_OUTCOME and contract.CUSTOM_DATA_KEYS is bc.CUSTOM_DATA_KEYS
    assert convert.EVENT_OUTCOME is analysis.OUTCOME_BY_EVENT is bc.OUTCOME_EVENTS
    assert bag_reader_samples.OUTCOME_EVENT is bc.EVENT_OF_OUTCOME
    for mod in (contract, convert, analysis, bag_reader_samples):
        assert (mod.EVENT_START, mod.EVENT_END, mod.EVENT_SUCCESS, mod.EVENT_FAILURE, mod.EVENT_ABORT) == bc.EVENT_CODES
    assert job.STATES is bc.RETRAIN_STATES and job.ACTIVE is bc.RETRAIN_ACTIVE_STATES


def test_bag_contract_imports_no_ros_and_no_other_apo_package():
    code = (
        "import sys\n"
        "import apo_core.bag_contract\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'apo_interfaces', 'apo_recorder',"
        " 'apo_trainer', 'apo_intervention', 'apo_policy_node', 'apo_sim', 'apo_bringup', 'apo_bench', 'rosbags'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Event -> outcome
# --------------------------------------------------------------------------------------------
def test_event_outcome_map_is_total_and_consistent():
    assert set(bc.OUTCOME_OF_EVENT) == set(bc.EVENT_CODES)
    assert all(o is None or o in bc.OUTCOMES for o in bc.OUTCOME_OF_EVENT.values())
    assert bc.OUTCOME_OF_EVENT[bc.EVENT_START] is None
    assert bc.END_EVENT_OUTCOME == {bc.EVENT_END: "unknown", bc.EVENT_SUCCESS: "success",
                                    bc.EVENT_FAILURE: "failure", bc.EVENT_ABORT: "abort"}
    assert bc.OUTCOME_EVENTS == {bc.EVENT_SUCCESS: "success", bc.EVENT_FAILURE: "failure", bc.EVENT_ABORT: "abort"}
    assert {bc.EVENT_OF_OUTCOME[o]: o for o in bc.EVENT_OF_OUTCOME} == bc.OUTCOME_EVENTS
    assert set(bc.OUTCOME_EVENTS.values()) | {bc.OUTCOME_UNKNOWN} == set(bc.OUTCOMES)


# --------------------------------------------------------------------------------------------
# episode_facts
# --------------------------------------------------------------------------------------------
def ev(code, episode_id="ep1", instruction="", task="", policy_version="", reason=""):
    return SimpleNamespace(event=code, episode_id=episode_id, instruction=instruction, task=task,
                           policy_version=policy_version, reason=reason)


START = ev(bc.EVENT_START, instruction="lift the cube", task="Lift", policy_version="v0003")
END = ev(bc.EVENT_END)


@pytest.mark.parametrize("events, outcome", [
    ([START, ev(bc.EVENT_SUCCESS, reason="operator"), END], "success"),
    ([START, ev(bc.EVENT_FAILURE, reason="operator"), END], "failure"),
    ([START, ev(bc.EVENT_FAILURE, reason="step limit (max_episode_steps)"), END], "failure"),  # timeout
    ([START, ev(bc.EVENT_ABORT, reason="e-stop"), END], "abort"),
    ([START, ev(bc.EVENT_ABORT, reason="operator"), END], "abort"),
    ([START, END], "unknown"),  # ended without an outcome (recorder stopped)
    ([START], "unknown"),  # killed mid-episode
    ([], "unknown"),
    ([START, ev(bc.EVENT_FAILURE), ev(bc.EVENT_SUCCESS), END], "success"),  # the last outcome event counts
])
def test_outcome_from_events(events, outcome):
    facts = bc.episode_facts({}, events, default_episode_id="dir")
    assert facts.outcome == outcome
    assert facts.outcome_source == ("events" if outcome != "unknown" else "none")
    if events:
        assert (facts.episode_id, facts.instruction, facts.task, facts.policy_version) == \
            ("ep1", "lift the cube", "Lift", "v0003")
    else:
        assert facts.episode_id == "dir" and "no outcome recorded" in facts.notes[0]


def test_custom_data_outcome_wins_unless_unknown_or_invalid():
    events = [START, ev(bc.EVENT_SUCCESS), END]
    facts = bc.episode_facts({bc.KEY_OUTCOME: "failure"}, events)
    assert facts.outcome == "failure" and facts.outcome_source == "custom_data"
    assert any("disagrees" in n for n in facts.notes)
    # "unknown" states the absence of an outcome (a killed recording's journal): the events decide.
    facts = bc.episode_facts({bc.KEY_OUTCOME: "unknown"}, events)
    assert facts.outcome == "success" and facts.outcome_source == "events" and not facts.notes
    facts = bc.episode_facts({bc.KEY_OUTCOME: "banana"}, events)
    assert facts.outcome == "success" and "not one of" in facts.notes[0]
    facts = bc.episode_facts({bc.KEY_OUTCOME: "unknown"}, [START, END])
    assert facts.outcome == "unknown" and not facts.notes  # custom data present: no "nothing recorded" note
    assert bc.episode_facts({bc.KEY_OUTCOME: "abort"}, []).outcome == "abort"


def test_other_facts_precedence():
    custom = {bc.KEY_EPISODE_ID: "ep-custom", bc.KEY_INSTRUCTION: "open", bc.KEY_TASK: "Door",
              bc.KEY_POLICY_VERSION: "v0009", bc.KEY_SCHEMA_VERSION: "2"}
    facts = bc.episode_facts(custom, [START], first_episode_id="ep-msg", default_episode_id="dir")
    assert (facts.episode_id, facts.instruction, facts.task, facts.policy_version) == ("ep-custom", "open", "Door",
                                                                                       "v0009")
    assert any("other episode id" in n for n in facts.notes) and any("schema_version" in n for n in facts.notes)
    # No custom data, no START: first message id, first event carrying a field, most common step version.
    late = ev(bc.EVENT_SUCCESS, episode_id="ep-x", instruction="from a later event")
    facts = bc.episode_facts({}, [late], first_episode_id="ep-x", step_policy_versions=["v1", "v2", "v2", ""],
                             default_episode_id="dir")
    assert (facts.episode_id, facts.instruction, facts.task, facts.policy_version) == ("ep-x", "from a later event",
                                                                                       "", "v2")
    assert bc.episode_facts({}, [], default_episode_id="dir").episode_id == "dir"
    assert bc.episode_facts({}, [], step_policy_versions={"v7": 3, "v8": 1}).policy_version == "v7"
    # START names the version the arbiter saw before the episode; after a model swap the END event
    # states the one the steps ran, and the last event naming a version wins.
    swapped = [START, ev(bc.EVENT_FAILURE, policy_version="v0004"), ev(bc.EVENT_END, policy_version="v0004")]
    assert bc.episode_facts({}, swapped).policy_version == "v0004"


# --------------------------------------------------------------------------------------------
# Conversion and analysis agree on the same recorded bags
# --------------------------------------------------------------------------------------------
def test_convert_and_analysis_report_the_same_episode_facts(tmp_path):
    from apo_core.dataset import read_episode
    from apo_trainer.analysis import summarise_bag
    from apo_trainer.bag_reader_samples import SampleEpisode, write_sample_bag
    from apo_trainer.convert import convert_bags

    bags = tmp_path / "bags"
    bags.mkdir()
    small = dict(image_size=(8, 8), action_dim=3, state_dim=2)
    cases = {
        "ep_success": SampleEpisode("ep_success", [1] * 6, outcome="success", **small),
        "ep_failure": SampleEpisode("ep_failure", [1] * 3 + [2] * 3, outcome="failure", **small),
        "ep_abort": SampleEpisode("ep_abort", [1] * 6, outcome="abort", policy_version="v0002", **small),
        # the journal of a killed recording says "unknown", the events say success
        "ep_journal": SampleEpisode("ep_journal", [1] * 6, outcome="success",
                                    custom_data={bc.KEY_OUTCOME: "unknown"}, **small),
        "ep_garbled": SampleEpisode("ep_garbled", [1] * 6, outcome="failure",
                                    custom_data={bc.KEY_OUTCOME: "banana"}, **small),
        "ep_no_outcome": SampleEpisode("ep_no_outcome", [1] * 6, outcome="unknown", **small),
    }
    for i, ep in enumerate(cases.values()):
        ep.start_ns += i * 10**9
        write_sample_bag(bags, ep)
    out = tmp_path / "out.h5"
    report = convert_bags(bags, out, progress=False, settle_seconds=0)
    converted = {}
    with h5py.File(out, "r") as f:
        names = {str(f["data"][n].attrs["episode_id"]): n for n in f["data"]}
    for eid, name in names.items():
        e = read_episode(out, name)
        converted[eid] = (e.outcome, e.instruction, e.policy_version)
    assert set(converted) == set(cases), report.summary()
    analysed = {}
    for eid in cases:
        s = summarise_bag(bags / eid)
        analysed[s.episode_id] = (s.outcome, s.instruction, s.policy_version)
    assert analysed == converted
    assert {eid: v[0] for eid, v in converted.items()} == {
        "ep_success": "success", "ep_failure": "failure", "ep_abort": "abort", "ep_journal": "success",
        "ep_garbled": "failure", "ep_no_outcome": "unknown"}
