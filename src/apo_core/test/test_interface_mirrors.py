"""Codes apo_core mirrors from apo_interfaces beyond the bag contract's (tests/test_bag_contract.py):
the LabelledStep labels and the dataset's InterventionMode constants equal the generated interfaces."""

from apo_core import dataset, labels


def _constants(cls, prefix):
    return {name[len(prefix):]: getattr(cls, name) for name in dir(cls) if name.startswith(prefix)}


def test_label_enum_equals_labelled_step_labels():
    from apo_interfaces.msg import LabelledStep

    assert {label.name: int(label) for label in labels.Label} == _constants(LabelledStep, "LABEL_")


def test_dataset_mode_constants_equal_the_interface():
    from apo_interfaces.msg import InterventionMode

    generated = _constants(InterventionMode, "MODE_")
    assert {name: getattr(dataset, "MODE_" + name) for name in generated} == generated
