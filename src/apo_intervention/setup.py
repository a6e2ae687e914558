from glob import glob

from setuptools import find_packages, setup

package_name = "apo_intervention"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/config", sorted(glob("config/*.yaml"))),
    ],
    install_requires=["apo_ros", "numpy", "pyyaml"],
    zip_safe=True,
    maintainer="APO-ROS maintainers",
    maintainer_email="apo-ros@example.com",
    description="Arbiter (mux + live labels + episodes), joystick/keyboard teleop and the scripted operator.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "apo_arbiter = apo_intervention.arbiter_node:main",
            "apo_joy_teleop = apo_intervention.joy_teleop_node:main",
            "apo_keyboard_teleop = apo_intervention.keyboard_teleop_node:main",
            "apo_scripted_operator = apo_intervention.scripted_operator_node:main",
        ],
    },
)
