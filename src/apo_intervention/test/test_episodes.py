"""EpisodeManager: ids, contiguous steps, outcome + END, step limit, simulator success."""

from apo_intervention.episodes import EpisodeManager, Event, make_id_factory


def mgr(**kw):
    base = dict(task="Lift", instruction="lift the cube", max_steps=0)
    base.update(kw)
    return EpisodeManager(**base)


def test_start_steps_success_end():
    m = mgr()
    assert m.step() is None and not m.active
    ok, msg, events = m.start("pick it up", policy_version="v3", reason="operator")
    assert ok and [e.event for e in events] == [Event.START]
    ep = events[0]
    assert ep.instruction == "pick it up" and ep.task == "Lift" and ep.policy_version == "v3"
    assert [m.step() for _ in range(5)] == [0, 1, 2, 3, 4]
    ok, msg, events = m.finish(Event.SUCCESS, "operator")
    assert ok and [e.event for e in events] == [Event.SUCCESS, Event.END]
    assert all(e.episode_id == ep.episode_id for e in events) and "5 steps" in msg
    assert m.step() is None and m.outcomes["SUCCESS"] == 1


def test_default_instruction_and_refusals():
    m = mgr()
    ok, _, events = m.start()
    assert events[0].instruction == "lift the cube"
    ok, msg, events = m.start()
    assert not ok and events == [] and "still active" in msg
    m.finish(Event.ABORT)
    ok, msg, events = m.finish(Event.FAILURE)
    assert not ok and events == [] and "no active episode" in msg
    ok, msg, _ = m.finish(Event.START)
    assert not ok


def test_ids_unique_and_steps_restart_from_zero():
    m = mgr()
    ids = []
    for _ in range(50):
        ids.append(m.start()[2][0].episode_id)
        assert m.step() == 0 and m.step() == 1
        m.finish(Event.FAILURE)
    assert len(set(ids)) == 50
    assert all(i.startswith("ep-") and all(c.isalnum() or c == "-" for c in i) for i in ids)
    # Two factories at the same instant (e.g. a restarted arbiter) still differ.
    a, b = make_id_factory("ep", clock=lambda: 0.0), make_id_factory("ep", clock=lambda: 0.0)
    assert a() != b()


def test_max_steps_ends_with_timeout_outcome():
    m = mgr(max_steps=3, timeout_outcome=Event.ABORT)
    m.start()
    seen = []
    for _ in range(3):
        seen.append(m.step())
        events = m.check_limit()
    assert seen == [0, 1, 2]
    assert [e.event for e in events] == [Event.ABORT, Event.END] and "max_episode_steps=3" in events[0].reason
    assert not m.active and m.step() is None


def test_task_success_needs_a_false_first_and_end_on_success():
    m = mgr()
    m.start()
    assert m.on_task_success(True) == []  # left over from the previous episode
    assert m.on_task_success(False) == []
    events = m.on_task_success(True)
    assert [e.event for e in events] == [Event.SUCCESS, Event.END] and "task_success" in events[0].reason
    m2 = mgr(end_on_success=False)
    m2.start()
    m2.on_task_success(False)
    assert m2.on_task_success(True) == [] and m2.active


def test_policy_version_first_seen_during_episode():
    m = mgr()
    m.start()
    m.set_policy_version("v1")
    m.set_policy_version("v2")
    assert m.finish(Event.FAILURE)[2][0].policy_version == "v1"


def test_stated_version_is_the_one_most_policy_steps_ran():
    m = mgr()
    m.start(policy_version="v1")  # provisional: what the arbiter saw before the episode
    assert m.step() == 0  # a human or hold step names no version
    for version in ("v1", "v2", "v2"):
        m.step(version)
    events = m.finish(Event.SUCCESS)[2]
    assert [e.policy_version for e in events] == ["v2", "v2"]
    m.start(policy_version="v2")
    m.step()  # no policy step at all: the provisional version stands
    assert m.finish(Event.FAILURE)[2][0].policy_version == "v2"
