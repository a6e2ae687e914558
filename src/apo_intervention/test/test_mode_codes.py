"""The arbiter's Mode enum is InterventionMode's codes, taken from apo_core (defined once), not restated."""

from apo_core import bag_contract, labels
from apo_intervention.mux import Mode


def test_mode_enum_equals_the_generated_interface_and_the_core_constants():
    from apo_interfaces.msg import InterventionMode

    generated = {name[len("MODE_"):]: getattr(InterventionMode, name) for name in dir(InterventionMode)
                 if name.startswith("MODE_")}
    assert {m.name: int(m) for m in Mode} == generated
    assert tuple(int(m) for m in Mode) == labels.MODES == bag_contract.MODES
